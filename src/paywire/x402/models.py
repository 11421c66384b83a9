"""x402 v1/v2 wire types as frozen slotted dataclasses with strict hand-written parsers.

``Model.from_wire(obj, path="")`` accepts any Python object (normally the result of
``json.loads``) and returns a model or raises :class:`~paywire.errors.WireError` whose detail
names the offending field path (``accepts[0].amount``); nothing else escapes. Opaque JSON parts
(``extra``, ``payload``, ``extensions``, unknown keys) are checked to be JSON (string keys, finite
numbers, nesting <= 32) and copied, so later changes to ``obj`` do not reach the model.

``Model.to_wire()`` returns fresh JSON-ready dicts: camelCase keys in spec order, amounts and
timestamps as base-10 strings, ``None`` optionals omitted.

Constructors do not validate; ``from_wire`` is the gate for untrusted input. Models holding
mappings compare by value but are not hashable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self, TypeVar

from paywire.errors import WireError
from paywire.x402 import reasons
from paywire.x402._json import MAX_JSON_DEPTH, loads_object
from paywire.x402.networks import is_caip2, to_caip2, to_caip2_or_none, to_v1_name

UINT256_LIMIT: Final = 1 << 256
"""Amounts and timestamps must be strictly below this."""
MAX_SAFE_INTEGER: Final = (1 << 53) - 1
"""Upper bound for JSON-number fields (``maxTimeoutSeconds``, kinds' ``x402Version``): JS-safe integers."""
MAX_ADDRESS_LENGTH: Final = 128
"""Longest non-EVM address / asset identifier accepted."""

_AMOUNT_RE: Final = re.compile(r"0|[1-9][0-9]{0,77}")
_EVM_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_LEGACY_NAME_RE: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

_MISSING: Final[Any] = object()
_T = TypeVar("_T")


# ------------------------------------------------------------------------------------------------
# Field helpers. ``d`` is the object being parsed, ``key`` the member, ``path`` the object's path;
# the full field path is only formatted when an error is raised.
# ------------------------------------------------------------------------------------------------


def _p(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_error(path: str, expected: str, value: object) -> WireError:
    return WireError(reasons.INVALID_FIELD_TYPE, f"{path or 'value'} must be {expected}, got {_kind(value)}")


def _root(obj: object, path: str) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if not path:
        raise WireError(reasons.NOT_AN_OBJECT, f"expected a JSON object, got {_kind(obj)}")
    raise _type_error(path, "an object", obj)


def _get(d: dict[str, Any], key: str, path: str) -> Any:
    value = d.get(key, _MISSING)
    if value is _MISSING:
        raise WireError(reasons.MISSING_FIELD, f"{_p(path, key)} is required")
    return value


def _req_str(d: dict[str, Any], key: str, path: str, *, nonempty: bool = False) -> str:
    value = _get(d, key, path)
    if not isinstance(value, str):
        raise _type_error(_p(path, key), "a string", value)
    if nonempty and not value:
        raise WireError(reasons.INVALID_FIELD_TYPE, f"{_p(path, key)} must not be empty")
    return value


def _opt_str(d: dict[str, Any], key: str, path: str) -> str | None:
    value = d.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _type_error(_p(path, key), "a string", value)


def _req_bool(d: dict[str, Any], key: str, path: str) -> bool:
    value = _get(d, key, path)
    if not isinstance(value, bool):
        raise _type_error(_p(path, key), "a boolean", value)
    return value


def _req_int(d: dict[str, Any], key: str, path: str, *, lo: int = 0, hi: int = MAX_SAFE_INTEGER) -> int:
    value = _get(d, key, path)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _type_error(_p(path, key), "an integer", value)
    if not lo <= value <= hi:
        raise WireError(reasons.INVALID_FIELD_TYPE, f"{_p(path, key)} must be an integer in [{lo}, {hi}]")
    return int(value)


def _amount(value: object, path: str) -> int:
    """A canonical base-10 ASCII integer string below 2**256."""
    if not isinstance(value, str):
        raise _type_error(path, "a base-10 integer string", value)
    if _AMOUNT_RE.fullmatch(value) is None:
        raise WireError(reasons.INVALID_AMOUNT, f"{path} is not a canonical base-10 integer: {value!r:.90}")
    number = int(value)
    if number >= UINT256_LIMIT:
        raise WireError(reasons.INVALID_AMOUNT, f"{path} does not fit in uint256")
    return number


def _req_amount(d: dict[str, Any], key: str, path: str) -> int:
    value = _get(d, key, path)
    if type(value) is str and _AMOUNT_RE.fullmatch(value) and len(value) < 78:
        return int(value)  # fast path: < 10**77 < 2**256
    return _amount(value, _p(path, key))


def _opt_amount(d: dict[str, Any], key: str, path: str) -> int | None:
    value = d.get(key)
    return None if value is None else _amount(value, _p(path, key))


def _req_address(d: dict[str, Any], key: str, path: str, evm: bool) -> str:
    """EVM: ``0x`` + 40 hex (any case; EIP-55 checksum not enforced); otherwise 1..128 non-blank chars."""
    value = _get(d, key, path)
    if not isinstance(value, str):
        raise _type_error(_p(path, key), "an address string", value)
    if evm:
        if _EVM_ADDRESS_RE.fullmatch(value) is None:
            raise WireError(
                reasons.INVALID_ADDRESS, f"{_p(path, key)} is not a 0x-prefixed 20-byte hex address"
            )
    elif not 0 < len(value) <= MAX_ADDRESS_LENGTH or value.strip() != value:
        raise WireError(
            reasons.INVALID_ADDRESS, f"{_p(path, key)} must be 1..{MAX_ADDRESS_LENGTH} non-blank characters"
        )
    return value


def _req_network_v2(d: dict[str, Any], key: str, path: str) -> str:
    value = _get(d, key, path)
    if not isinstance(value, str):
        raise _type_error(_p(path, key), "a CAIP-2 network string", value)
    if not is_caip2(value):
        raise WireError(reasons.INVALID_NETWORK, f"{_p(path, key)} is not a CAIP-2 id: {value!r:.80}")
    return value


def _req_network_v1(d: dict[str, Any], key: str, path: str) -> str:
    """Known v1 legacy name or CAIP-2, kept as given."""
    value = _get(d, key, path)
    if not isinstance(value, str):
        raise _type_error(_p(path, key), "a network string", value)
    if to_caip2_or_none(value) is None:
        raise WireError(
            reasons.INVALID_NETWORK,
            f"{_p(path, key)} is neither a known v1 network nor CAIP-2: {value!r:.80}",
        )
    return value


def _network_loose(value: object, path: str) -> str:
    """CAIP-2, or anything shaped like a v1 legacy name (known or not); used for facilitator output."""
    if not isinstance(value, str):
        raise _type_error(path, "a network string", value)
    if not is_caip2(value) and (len(value) > 64 or _LEGACY_NAME_RE.fullmatch(value) is None):
        raise WireError(reasons.INVALID_NETWORK, f"{path} is not a network id: {value!r:.80}")
    return value


def _version(d: dict[str, Any], path: str, allowed: tuple[int, ...]) -> int:
    version = _get(d, "x402Version", path)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _type_error(_p(path, "x402Version"), "an integer", version)
    if version not in allowed:
        shown = version if -1000 < version < 1000 else "(out of range)"
        raise WireError(
            reasons.UNSUPPORTED_VERSION, f"{_p(path, 'x402Version')} {shown} is not supported here"
        )
    return int(version)


class _NotJson(Exception):
    pass


def _json_copy(value: Any, depth: int) -> Any:
    """Deep copy of a JSON value, refusing non-JSON Python values (raises _NotJson)."""
    t = type(value)
    if t is dict:
        if depth >= MAX_JSON_DEPTH:
            raise _NotJson(f"nests deeper than {MAX_JSON_DEPTH}")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise _NotJson(f"has a non-string key {k!r:.40}")
                k = str.__str__(k)
            tv = type(v)
            out[k] = v if tv is str or tv is int or tv is bool or v is None else _json_copy(v, depth + 1)
        return out
    if t is list:
        if depth >= MAX_JSON_DEPTH:
            raise _NotJson(f"nests deeper than {MAX_JSON_DEPTH}")
        return [
            v
            if type(v) is str or type(v) is int or type(v) is bool or v is None
            else _json_copy(v, depth + 1)
            for v in value
        ]
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        if not math.isfinite(value):
            raise _NotJson("holds a non-finite number")
        return value
    # Subclasses of JSON types (OrderedDict, IntEnum, StrEnum, ...) become plain values.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, dict):
        return _json_copy(dict(value), depth)
    if isinstance(value, list):
        return _json_copy(list(value), depth)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _json_copy(float(value), depth)
    raise _NotJson(f"holds a {type(value).__name__}, which is not a JSON value")


def _json(value: object, path: str) -> Any:
    try:
        return _json_copy(value, 1)
    except _NotJson as exc:
        raise WireError(reasons.INVALID_JSON, f"{path or 'value'} {exc}") from None


def _req_object(d: dict[str, Any], key: str, path: str, trusted: bool) -> dict[str, Any]:
    value = _get(d, key, path)
    if not isinstance(value, dict):
        raise _type_error(_p(path, key), "an object", value)
    if trusted:
        return value
    result: dict[str, Any] = _json(value, _p(path, key))
    return result


def _opt_object(d: dict[str, Any], key: str, path: str, trusted: bool) -> dict[str, Any] | None:
    return None if d.get(key) is None else _req_object(d, key, path, trusted)


def _unknown(d: dict[str, Any], known: frozenset[str], path: str, trusted: bool) -> dict[str, Any]:
    """The members of ``d`` whose keys are not in ``known`` (validated copies unless trusted)."""
    if known.issuperset(d):
        return {}
    rest = {k: v for k, v in d.items() if k not in known}
    if trusted:
        return rest
    result: dict[str, Any] = _json(rest, path)
    return result


def _copy(value: Any) -> Any:
    """Fresh deep copy of already-validated JSON containers (tuples become lists)."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _same(value: Any) -> Any:
    """No copy: for :meth:`wire_view`, whose result is only encoded."""
    return value


def _merge_other(out: dict[str, Any], other: Mapping[str, Any], copy: Callable[[Any], Any] = _copy) -> None:
    for key, value in other.items():
        if key not in out:
            out[key] = copy(value)


class _Wire:
    """Shared ``from_wire`` entry point; subclasses implement ``_parse``."""

    __slots__ = ()

    @classmethod
    def from_wire(cls, obj: object, path: str = "") -> Self:
        """Parse ``obj`` strictly (see the class docstring); ``path`` prefixes field paths in errors."""
        return cls._parse(obj, path, False)

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        """``trusted``: ``obj`` came from paywire's strict JSON decoder, so opaque parts are not re-copied."""
        raise NotImplementedError

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    def wire_view(self) -> dict[str, Any]:
        """What :meth:`to_wire` returns, possibly sharing nested containers with this object: to encode, never to
        change (saves the deep copies where a JSON text is all that is wanted)."""
        return self.to_wire()


# ------------------------------------------------------------------------------------------------
# v2 types
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceInfo(_Wire):
    """The paid resource (digest §1.3).

    ``url`` is a required non-empty string; ``description``/``mimeType`` default to ``""`` and are
    always emitted (as the SDK servers do). Unknown keys (PY SDK 2.x ``serviceName``, ``tags``,
    ``iconUrl``, ...) are kept in ``other``.
    """

    url: str
    description: str = ""
    mime_type: str = ""
    other: Mapping[str, Any] = field(default_factory=dict)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"url", "description", "mimeType"})

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        return cls(
            url=_req_str(d, "url", path, nonempty=True),
            description=_opt_str(d, "description", path) or "",
            mime_type=_opt_str(d, "mimeType", path) or "",
            other=_unknown(d, cls._KEYS, path, trusted),
        )

    def to_wire(self) -> dict[str, Any]:
        """``{url, description, mimeType, ...other}``."""
        out: dict[str, Any] = {"url": self.url, "description": self.description, "mimeType": self.mime_type}
        if self.other:
            _merge_other(out, self.other)
        return out


@dataclass(frozen=True, slots=True)
class PaymentRequirements(_Wire):
    """One acceptable way to pay (digest §1.2; checklist 3).

    Parsing: non-empty ``scheme``; CAIP-2 ``network``; canonical ``amount`` < 2**256; ``asset`` and
    ``payTo`` shaped for the network; integer ``maxTimeoutSeconds`` in [0, 2**53-1]; ``extra`` an
    object (absent/null -> ``{}``). ``other`` keeps unknown keys and ``wire_keys`` the received key
    order, so ``to_wire()`` reproduces a peer's object exactly for the verbatim ``accepted`` echo
    (§1.5, checklist 27). ``wire_keys`` takes no part in equality.
    """

    scheme: str
    network: str
    amount: int
    asset: str
    pay_to: str
    max_timeout_seconds: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    other: Mapping[str, Any] = field(default_factory=dict)
    wire_keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"}
    )

    @property
    def is_evm(self) -> bool:
        """True on ``eip155:*`` networks."""
        return self.network.startswith("eip155:")

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        scheme = _req_str(d, "scheme", path, nonempty=True)
        network = _req_network_v2(d, "network", path)
        amount = _req_amount(d, "amount", path)
        evm = network.startswith("eip155:")
        asset = _req_address(d, "asset", path, evm)
        pay_to = _req_address(d, "payTo", path, evm)
        timeout = _req_int(d, "maxTimeoutSeconds", path)
        extra = _opt_object(d, "extra", path, trusted)
        return cls(
            scheme=scheme,
            network=network,
            amount=amount,
            asset=asset,
            pay_to=pay_to,
            max_timeout_seconds=timeout,
            extra={} if extra is None else extra,
            other=_unknown(d, cls._KEYS, path, trusted),
            wire_keys=tuple(d),
        )

    def to_wire(self) -> dict[str, Any]:
        """Spec order (or the received order); ``extra`` omitted only if it was absent and is empty."""
        return self._wire(_copy)

    def wire_view(self) -> dict[str, Any]:
        return self._wire(_same)

    def _wire(self, copy: Callable[[Any], Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scheme": self.scheme,
            "network": self.network,
            "amount": str(self.amount),
            "asset": self.asset,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": copy(self.extra),
        }
        if self.other:
            _merge_other(out, self.other, copy)
        if self.wire_keys:
            if not self.extra and "extra" not in self.wire_keys:
                del out["extra"]
            if tuple(out) != self.wire_keys:
                ordered = {k: out[k] for k in self.wire_keys if k in out}
                ordered.update(out)
                out = ordered
        return out


def _resource(d: dict[str, Any], path: str, trusted: bool) -> ResourceInfo | None:
    raw = d.get("resource")
    return None if raw is None else ResourceInfo._parse(raw, _p(path, "resource"), trusted)


def _accepts(
    d: dict[str, Any], path: str, trusted: bool, parse: Callable[[object, str, bool], _T]
) -> tuple[_T, ...]:
    value = _get(d, "accepts", path)
    if not isinstance(value, list):
        raise _type_error(_p(path, "accepts"), "an array", value)
    if not value:
        raise WireError(reasons.INVALID_PAYLOAD, f"{_p(path, 'accepts')} must not be empty")
    key_path = _p(path, "accepts")
    return tuple(parse(item, f"{key_path}[{i}]", trusted) for i, item in enumerate(value))


@dataclass(frozen=True, slots=True)
class PaymentRequired(_Wire):
    """Server -> client "you must pay" (digest §1.1; checklist 2); travels in ``PAYMENT-REQUIRED``.

    ``x402Version`` must be 2 and ``accepts`` a non-empty array. ``resource`` is optional when
    parsing (PY SDK makes it optional; SPEC2 requires it).
    """

    x402_version: int = field(default=2, kw_only=True)
    accepts: tuple[PaymentRequirements, ...]
    resource: ResourceInfo | None = None
    error: str | None = None
    extensions: Mapping[str, Any] | None = None

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        version = _version(d, path, (2,))
        error = _opt_str(d, "error", path)
        resource = _resource(d, path, trusted)
        accepts = _accepts(d, path, trusted, PaymentRequirements._parse)
        return cls(
            accepts=accepts,
            resource=resource,
            error=error,
            extensions=_opt_object(d, "extensions", path, trusted),
            x402_version=version,
        )

    def to_wire(self) -> dict[str, Any]:
        """``{x402Version, error?, resource?, accepts, extensions?}``."""
        out: dict[str, Any] = {"x402Version": self.x402_version}
        if self.error is not None:
            out["error"] = self.error
        if self.resource is not None:
            out["resource"] = self.resource.to_wire()
        out["accepts"] = [r.to_wire() for r in self.accepts]
        if self.extensions is not None:
            out["extensions"] = _copy(self.extensions)
        return out


@dataclass(frozen=True, slots=True)
class PaymentPayload(_Wire):
    """Client -> server v2 payment (digest §1.5); travels in ``PAYMENT-SIGNATURE``.

    ``x402Version`` must be 2; ``accepted`` and ``payload`` (an object) are required. ``payload``
    is scheme-specific and kept as JSON; schemes parse it further (each scheme's own payload type).
    """

    x402_version: int = field(default=2, kw_only=True)
    accepted: PaymentRequirements
    payload: Mapping[str, Any]
    resource: ResourceInfo | None = None
    extensions: Mapping[str, Any] | None = None

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        version = _version(d, path, (2,))
        resource = _resource(d, path, trusted)
        accepted = PaymentRequirements._parse(_get(d, "accepted", path), _p(path, "accepted"), trusted)
        payload = _req_object(d, "payload", path, trusted)
        return cls(
            accepted=accepted,
            payload=payload,
            resource=resource,
            extensions=_opt_object(d, "extensions", path, trusted),
            x402_version=version,
        )

    def to_wire(self) -> dict[str, Any]:
        """``{x402Version, resource?, accepted, payload, extensions?}``."""
        out: dict[str, Any] = {"x402Version": self.x402_version}
        if self.resource is not None:
            out["resource"] = self.resource.to_wire()
        out["accepted"] = self.accepted.to_wire()
        out["payload"] = _copy(self.payload)
        if self.extensions is not None:
            out["extensions"] = _copy(self.extensions)
        return out

    def wire_view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"x402Version": self.x402_version}
        if self.resource is not None:
            out["resource"] = self.resource.wire_view()
        out["accepted"] = self.accepted.wire_view()
        out["payload"] = self.payload
        if self.extensions is not None:
            out["extensions"] = self.extensions
        return out


@dataclass(frozen=True, slots=True)
class VerifyResponse(_Wire):
    """Facilitator ``/verify`` result (digest §1.6): ``isValid`` required, the rest optional strings."""

    is_valid: bool
    invalid_reason: str | None = None
    payer: str | None = None
    invalid_message: str | None = None
    extra: Mapping[str, Any] | None = None  # scheme facts (batch-settlement: the on-chain channel snapshot)

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        return cls(
            is_valid=_req_bool(d, "isValid", path),
            invalid_reason=_opt_str(d, "invalidReason", path),
            payer=_opt_str(d, "payer", path),
            invalid_message=_opt_str(d, "invalidMessage", path),
            extra=_opt_object(d, "extra", path, trusted),
        )

    def to_wire(self) -> dict[str, Any]:
        """``{isValid, invalidReason?, payer?, invalidMessage?, extra?}``."""
        out: dict[str, Any] = {"isValid": self.is_valid}
        if self.invalid_reason is not None:
            out["invalidReason"] = self.invalid_reason
        if self.payer is not None:
            out["payer"] = self.payer
        if self.invalid_message is not None:
            out["invalidMessage"] = self.invalid_message
        if self.extra is not None:
            out["extra"] = _copy(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class SettleResponse(_Wire):
    """Facilitator ``/settle`` result; body of ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE`` (digest §1.6).

    ``transaction`` and ``network`` are required when ``success`` is true (``transaction`` may be
    ``""`` for zero-amount ``upto``); failures may omit them. ``network`` may be CAIP-2 or any
    v1-style name. ``amount`` is a canonical amount string when present.
    """

    success: bool
    transaction: str = ""
    network: str = ""
    payer: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    amount: int | None = None
    extensions: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None  # scheme facts (batch-settlement: chargedAmount, channelState)

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        if d.get("amount") == "":  # batch-settlement: "" when no token moved (a voucher)
            d = {k: v for k, v in d.items() if k != "amount"}
        success = _req_bool(d, "success", path)
        if success:
            transaction = _req_str(d, "transaction", path)
            network = _network_loose(_get(d, "network", path), _p(path, "network"))
        else:
            transaction = _opt_str(d, "transaction", path) or ""
            network = _opt_str(d, "network", path) or ""
            if network:
                _network_loose(network, _p(path, "network"))
        return cls(
            success=success,
            transaction=transaction,
            network=network,
            payer=_opt_str(d, "payer", path),
            error_reason=_opt_str(d, "errorReason", path),
            error_message=_opt_str(d, "errorMessage", path),
            amount=_opt_amount(d, "amount", path),
            extensions=_opt_object(d, "extensions", path, trusted),
            extra=_opt_object(d, "extra", path, trusted),
        )

    def to_wire(self) -> dict[str, Any]:
        """``{success, errorReason?, payer?, transaction, network, amount?, extensions?, extra?, errorMessage?}``."""
        out: dict[str, Any] = {"success": self.success}
        if self.error_reason is not None:
            out["errorReason"] = self.error_reason
        if self.payer is not None:
            out["payer"] = self.payer
        out["transaction"] = self.transaction
        out["network"] = self.network
        if self.amount is not None:
            out["amount"] = str(self.amount)
        if self.extensions is not None:
            out["extensions"] = _copy(self.extensions)
        if self.extra is not None:
            out["extra"] = _copy(self.extra)
        if self.error_message is not None:
            out["errorMessage"] = self.error_message
        return out


@dataclass(frozen=True, slots=True)
class SupportedKind(_Wire):
    """One (version, scheme, network) a facilitator handles (digest §1.6).

    ``x402Version`` is any positive integer; v1 kinds may use any v1-style network name (a
    facilitator may know chains newer than our table), v2+ kinds must use CAIP-2.
    """

    x402_version: int
    scheme: str
    network: str
    extra: Mapping[str, Any] | None = None

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        version = _req_int(d, "x402Version", path, lo=1)
        scheme = _req_str(d, "scheme", path, nonempty=True)
        if version == 1:
            network = _network_loose(_get(d, "network", path), _p(path, "network"))
        else:
            network = _req_network_v2(d, "network", path)
        return cls(version, scheme, network, _opt_object(d, "extra", path, trusted))

    def to_wire(self) -> dict[str, Any]:
        """``{x402Version, scheme, network, extra?}``."""
        out: dict[str, Any] = {
            "x402Version": self.x402_version,
            "scheme": self.scheme,
            "network": self.network,
        }
        if self.extra is not None:
            out["extra"] = _copy(self.extra)
        return out


def _str_list(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _type_error(path, "an array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _type_error(f"{path}[{i}]", "a non-empty string", item)
    return tuple(value)


@dataclass(frozen=True, slots=True)
class SupportedResponse(_Wire):
    """Facilitator ``GET /supported`` (digest §1.6; checklist 40).

    ``kinds`` is required (may be empty); ``extensions`` (strings) and ``signers`` (CAIP family
    pattern -> addresses) are optional when parsing because v1 facilitators send ``{kinds}`` only.
    ``to_wire`` always emits the v2 shape.
    """

    kinds: tuple[SupportedKind, ...]
    extensions: tuple[str, ...] = ()
    signers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        kinds_path = _p(path, "kinds")
        raw_kinds = _get(d, "kinds", path)
        if not isinstance(raw_kinds, list):
            raise _type_error(kinds_path, "an array", raw_kinds)
        kinds = tuple(SupportedKind._parse(k, f"{kinds_path}[{i}]", trusted) for i, k in enumerate(raw_kinds))
        raw_ext = d.get("extensions")
        extensions = () if raw_ext is None else _str_list(raw_ext, _p(path, "extensions"))
        signers_path = _p(path, "signers")
        raw_signers = d.get("signers")
        signers: dict[str, tuple[str, ...]] = {}
        if raw_signers is not None:
            if not isinstance(raw_signers, dict):
                raise _type_error(signers_path, "an object", raw_signers)
            for pattern, addresses in raw_signers.items():
                if not isinstance(pattern, str) or not pattern:
                    raise WireError(
                        reasons.INVALID_FIELD_TYPE, f"{signers_path} has an empty or non-string key"
                    )
                signers[pattern] = _str_list(addresses, _p(signers_path, pattern))
        return cls(kinds, extensions, signers)

    def to_wire(self) -> dict[str, Any]:
        """``{kinds, extensions, signers}``."""
        return {
            "kinds": [k.to_wire() for k in self.kinds],
            "extensions": list(self.extensions),
            "signers": {pattern: list(addresses) for pattern, addresses in self.signers.items()},
        }


# ------------------------------------------------------------------------------------------------
# v1 types (digest §2; checklist 92-94)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentRequirementsV1(_Wire):
    """x402 v1 requirement (checklist 93). ``network`` is kept as given (known v1 name or CAIP-2).

    ``maxAmountRequired``, ``resource`` (non-empty), ``payTo``, ``maxTimeoutSeconds``, ``asset`` are
    required; ``description``/``mimeType`` default to ``""`` (PY omits them when unset) and are always
    emitted; ``extra`` may arrive as a JSON-encoded string and is parsed; unknown keys go to ``other``.
    """

    scheme: str
    network: str
    max_amount_required: int
    resource: str
    description: str
    mime_type: str
    pay_to: str
    max_timeout_seconds: int
    asset: str
    extra: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    other: Mapping[str, Any] = field(default_factory=dict)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "scheme",
            "network",
            "maxAmountRequired",
            "resource",
            "description",
            "mimeType",
            "outputSchema",
            "payTo",
            "maxTimeoutSeconds",
            "asset",
            "extra",
        }
    )

    @property
    def caip2_network(self) -> str:
        """``network`` as CAIP-2."""
        return to_caip2(self.network)

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        scheme = _req_str(d, "scheme", path, nonempty=True)
        network = _req_network_v1(d, "network", path)
        amount = _req_amount(d, "maxAmountRequired", path)
        resource = _req_str(d, "resource", path, nonempty=True)
        description = _opt_str(d, "description", path) or ""
        mime_type = _opt_str(d, "mimeType", path) or ""
        output_schema = _opt_object(d, "outputSchema", path, trusted)
        evm = to_caip2(network).startswith("eip155:")
        pay_to = _req_address(d, "payTo", path, evm)
        timeout = _req_int(d, "maxTimeoutSeconds", path)
        asset = _req_address(d, "asset", path, evm)
        extra: dict[str, Any] | None
        raw_extra = d.get("extra")
        if isinstance(raw_extra, str):
            try:
                extra = loads_object(raw_extra)
            except WireError as exc:
                raise WireError(exc.reason, f"{_p(path, 'extra')} (JSON string): {exc.detail}") from None
        else:
            extra = _opt_object(d, "extra", path, trusted)
        return cls(
            scheme=scheme,
            network=network,
            max_amount_required=amount,
            resource=resource,
            description=description,
            mime_type=mime_type,
            pay_to=pay_to,
            max_timeout_seconds=timeout,
            asset=asset,
            extra=extra,
            output_schema=output_schema,
            other=_unknown(d, cls._KEYS, path, trusted),
        )

    def to_wire(self) -> dict[str, Any]:
        """SPEC1 order; ``extra`` emitted as an object; ``None`` optionals omitted."""
        out: dict[str, Any] = {
            "scheme": self.scheme,
            "network": self.network,
            "maxAmountRequired": str(self.max_amount_required),
            "resource": self.resource,
            "description": self.description,
            "mimeType": self.mime_type,
        }
        if self.output_schema is not None:
            out["outputSchema"] = _copy(self.output_schema)
        out["payTo"] = self.pay_to
        out["maxTimeoutSeconds"] = self.max_timeout_seconds
        out["asset"] = self.asset
        if self.extra is not None:
            out["extra"] = _copy(self.extra)
        if self.other:
            _merge_other(out, self.other)
        return out


@dataclass(frozen=True, slots=True)
class PaymentRequiredV1(_Wire):
    """v1 402 JSON body ``{x402Version: 1, error, accepts}`` (checklist 92).

    ``accepts`` must be non-empty; ``error`` defaults to ``""`` when absent (PY makes it optional)
    and is always emitted. Unknown top-level keys (LEGACY ``payer``) are ignored.
    """

    x402_version: int = field(default=1, kw_only=True)
    error: str
    accepts: tuple[PaymentRequirementsV1, ...]

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        version = _version(d, path, (1,))
        error = _opt_str(d, "error", path) or ""
        accepts = _accepts(d, path, trusted, PaymentRequirementsV1._parse)
        return cls(error=error, accepts=accepts, x402_version=version)

    def to_wire(self) -> dict[str, Any]:
        """``{x402Version, error, accepts}``."""
        return {
            "x402Version": self.x402_version,
            "error": self.error,
            "accepts": [r.to_wire() for r in self.accepts],
        }


@dataclass(frozen=True, slots=True)
class PaymentPayloadV1(_Wire):
    """v1 payment ``{x402Version: 1, scheme, network, payload}`` in ``X-PAYMENT`` (checklist 94).

    All four required; network is a known v1 name or CAIP-2.
    """

    x402_version: int = field(default=1, kw_only=True)
    scheme: str
    network: str
    payload: Mapping[str, Any]

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        version = _version(d, path, (1,))
        scheme = _req_str(d, "scheme", path, nonempty=True)
        network = _req_network_v1(d, "network", path)
        payload = _req_object(d, "payload", path, trusted)
        return cls(scheme=scheme, network=network, payload=payload, x402_version=version)

    def to_wire(self) -> dict[str, Any]:
        """``{x402Version, scheme, network, payload}``."""
        return {
            "x402Version": self.x402_version,
            "scheme": self.scheme,
            "network": self.network,
            "payload": _copy(self.payload),
        }


def _parse_payment_payload(obj: object, path: str, trusted: bool) -> PaymentPayload | PaymentPayloadV1:
    d = _root(obj, path)
    if _version(d, path, (1, 2)) == 1:
        return PaymentPayloadV1._parse(d, path, trusted)
    return PaymentPayload._parse(d, path, trusted)


def parse_payment_payload(obj: object, path: str = "") -> PaymentPayload | PaymentPayloadV1:
    """Parse a payment payload of either version, dispatching on ``x402Version`` (1 or 2, else ``unsupported_version``)."""
    return _parse_payment_payload(obj, path, False)


@dataclass(frozen=True, slots=True)
class FacilitatorRequest(_Wire):
    """Body of ``POST /verify`` and ``POST /settle`` (digest §1.6; checklist 13).

    The top-level ``x402Version`` (1 or 2) selects v1 or v2 requirement types and must equal
    ``paymentPayload.x402Version`` (else ``invalid_payload``).
    """

    x402_version: int
    payment_payload: PaymentPayload | PaymentPayloadV1
    payment_requirements: PaymentRequirements | PaymentRequirementsV1

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        version = _version(d, path, (1, 2))
        payload = _parse_payment_payload(_get(d, "paymentPayload", path), _p(path, "paymentPayload"), trusted)
        if payload.x402_version != version:
            raise WireError(
                reasons.INVALID_PAYLOAD,
                f"{_p(path, 'x402Version')} {version} differs from paymentPayload.x402Version "
                f"{payload.x402_version}",
            )
        raw = _get(d, "paymentRequirements", path)
        req_path = _p(path, "paymentRequirements")
        requirements: PaymentRequirements | PaymentRequirementsV1
        if version == 1:
            requirements = PaymentRequirementsV1._parse(raw, req_path, trusted)
        else:
            requirements = PaymentRequirements._parse(raw, req_path, trusted)
        return cls(version, payload, requirements)

    def to_wire(self) -> dict[str, Any]:
        """``{x402Version, paymentPayload, paymentRequirements}``."""
        return {
            "x402Version": self.x402_version,
            "paymentPayload": self.payment_payload.to_wire(),
            "paymentRequirements": self.payment_requirements.to_wire(),
        }


# ------------------------------------------------------------------------------------------------
# v1 <-> v2 conversion
# ------------------------------------------------------------------------------------------------


def requirements_v1_to_v2(r1: PaymentRequirementsV1) -> tuple[PaymentRequirements, ResourceInfo]:
    """v1 requirement -> (v2 requirement with CAIP-2 network, its ResourceInfo). ``outputSchema`` is dropped."""
    requirements = PaymentRequirements(
        scheme=r1.scheme,
        network=to_caip2(r1.network),
        amount=r1.max_amount_required,
        asset=r1.asset,
        pay_to=r1.pay_to,
        max_timeout_seconds=r1.max_timeout_seconds,
        extra=_copy(r1.extra) if r1.extra is not None else {},
    )
    return requirements, ResourceInfo(r1.resource, r1.description, r1.mime_type)


def requirements_v2_to_v1(r2: PaymentRequirements, resource: ResourceInfo) -> PaymentRequirementsV1:
    """v2 requirement + resource -> v1 requirement; the network becomes its v1 name when one exists
    (else stays CAIP-2); an empty ``extra`` becomes absent."""
    return PaymentRequirementsV1(
        scheme=r2.scheme,
        network=to_v1_name(r2.network) or r2.network,
        max_amount_required=r2.amount,
        resource=resource.url,
        description=resource.description,
        mime_type=resource.mime_type,
        pay_to=r2.pay_to,
        max_timeout_seconds=r2.max_timeout_seconds,
        asset=r2.asset,
        extra=_copy(r2.extra) if r2.extra else None,
    )
