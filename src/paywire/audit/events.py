"""Audit events (sans-I/O): canonical JSON (RFC 8785) describing one state change of money, with a guard that
keeps secrets out, and the log entry that binds an event to its sequence number.

An event is ``{"v", "component", "instance", "kind", "time", "subject", "previous", "data"}``. ``subject`` holds
the ids a reader searches by (payment, settlement or challenge id, tx hash, network, asset, payer, payee, amount,
route); ``previous`` is the state the change left; ``data`` anything else. Values that are secrets (private keys,
Lightning preimages, macaroon root keys, HMAC keys, bearer tokens, Authorization headers) are refused: record
:func:`digest` of them instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paywire.mpp.jcs import MAX_EXACT_INT, canonicalize
from paywire.x402._json import SURROGATE_RE

SCHEMA_VERSION = 1
COMPONENTS = frozenset({"seller", "facilitator", "buyer", "config", "audit"})

# Words that make a field name a secret, unless its last word says it holds a digest or an identifier.
SECRET_WORDS = frozenset({"private", "secret", "preimage", "password", "passphrase", "seed", "mnemonic", "token",
                          "authorization", "macaroon", "hmac", "bearer", "cookie", "credential", "apikey", "skey"})
SAFE_LAST_WORDS = frozenset({"digest", "sha256", "hash", "id", "ids", "fingerprint", "count", "type", "kind",
                             "name", "names", "address", "vkey", "expiry", "expires", "at", "issued"})
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_VALUE = re.compile(r"^(?:(?:bearer|basic|l402|lsat|payment|digest)\s+\S|-----BEGIN |PRIVATE\+KEY\+)",
                           re.IGNORECASE)


class SecretFieldError(ValueError):
    """An event would record a secret; record ``digest(value)`` under a ``*_digest`` name instead."""


def digest(value: str | bytes) -> str:
    """``sha256:<hex>`` of a secret or a large payload: what an event records in its place."""
    raw = value.encode() if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def secret_value(value: str) -> bool:
    """Whether a string looks like a secret whatever its field (an Authorization header, a PEM private key)."""
    return _SECRET_VALUE.match(value) is not None


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(name)]


@functools.lru_cache(maxsize=4096)
def secret_field(name: str) -> bool:
    """Whether a field called ``name`` would hold a secret (``root_key``, ``preimage``, ``authorization``…)."""
    words = _words(name)
    if not words or words[-1] in SAFE_LAST_WORDS:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    return words[-1] in ("key", "keys") and words[:-1] != ["public"]


def check_no_secrets(value: Any, path: str = "event") -> bool:
    """Raise :class:`SecretFieldError` naming the first field that holds (or looks like) a secret; also refuse
    integers a JSON reader would round (write amounts as decimal strings). Returns whether ``value`` is *plain*
    (ASCII keys, no floats): then sorted compact JSON is already its RFC 8785 form."""
    kind = type(value)
    if kind is str:
        if _SECRET_VALUE.match(value):
            raise SecretFieldError(f"{path} looks like an Authorization header or a private key: record its digest")
        return True
    if value is None or kind is bool:
        return True
    if kind is int:
        if abs(value) > MAX_EXACT_INT:
            raise SecretFieldError(f"{path} is an integer beyond 2^53: write it as a decimal string")
        return True
    plain = True
    if kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                plain = False
            if secret_field(str(key)):
                raise SecretFieldError(f"{path}.{key} looks like a secret: record digest(value) as {key}_digest")
            if type(item) is str:
                if _SECRET_VALUE.match(item):
                    raise SecretFieldError(f"{path}.{key} looks like an Authorization header or a private key: "
                                           "record its digest")
            elif item is not None:
                plain = check_no_secrets(item, f"{path}.{key}") and plain
        return plain
    if kind is list or kind is tuple:
        for i, item in enumerate(value):
            plain = check_no_secrets(item, f"{path}[{i}]") and plain
        return plain
    if isinstance(value, int) and not isinstance(value, bool):  # an int subclass
        return check_no_secrets(int(value), path)
    return False  # floats and anything else: the full JCS encoder decides


def utc_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds: how events record time."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_event(component: str, kind: str, *, instance: str, time: float, subject: Mapping[str, Any],
               previous: str | None = None, data: Mapping[str, Any] | None = None) -> bytes:
    """The canonical bytes of one event (checked for secrets)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown audit component {component!r}: one of {sorted(COMPONENTS)}")
    if not kind or not instance:
        raise ValueError("an audit event needs a kind and an instance id")
    event = {"v": SCHEMA_VERSION, "component": component, "instance": instance, "kind": kind,
             "time": utc_time(time), "subject": dict(subject), "previous": previous, "data": dict(data or {})}
    if check_no_secrets(event):
        # ASCII keys sort the same by code point and by UTF-16 unit, and strings, integers, true/false/null are
        # written as RFC 8785 writes them: the fast encoder gives the canonical bytes
        text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if not SURROGATE_RE.search(text):
            return text.encode()
    return canonicalize(event)


# ------------------------------------------------------------------------------------------- log entries

_ENTRY_HEAD = b'{"event":'
_SEQ_MARK = b',"seq":'


def log_entry(seq: int, event: bytes) -> bytes:
    """The logged bytes: ``{"event":<event>,"seq":<seq>}`` — still canonical JSON when ``event`` is, and the
    sequence number is hashed into the leaf, so moving an entry changes its hash."""
    return b"".join((_ENTRY_HEAD, event, _SEQ_MARK, str(seq).encode(), b"}"))


def entry_seq(entry: bytes) -> int | None:
    """The sequence number an entry carries (``None`` if it is not a log entry)."""
    if not entry.startswith(_ENTRY_HEAD) or not entry.endswith(b"}"):
        return None
    cut = entry.rfind(_SEQ_MARK)
    digits = entry[cut + len(_SEQ_MARK):-1] if cut > 0 else b""
    if not digits.isdigit() or (digits.startswith(b"0") and digits != b"0"):
        return None
    return int(digits)


def entry_event(entry: bytes) -> dict[str, Any]:
    """The event inside a log entry, parsed."""
    cut = entry.rfind(_SEQ_MARK)
    if not entry.startswith(_ENTRY_HEAD) or cut < 0:
        raise ValueError("not an audit log entry")
    event = json.loads(entry[len(_ENTRY_HEAD):cut])
    if not isinstance(event, dict):
        raise ValueError("an audit event is a JSON object")
    return event
