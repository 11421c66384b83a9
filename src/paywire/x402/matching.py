"""Pure matching of offers against what a client accepted (digest §1.5; checklist 11, 12, 26)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from paywire.x402.models import PaymentPayloadV1, PaymentRequirements, PaymentRequirementsV1
from paywire.x402.networks import to_caip2_or_none

_T = TypeVar("_T")
# isinstance with a tuple constant: ``list | tuple`` written in the call builds a union object on every call
_ARRAY = (list, tuple)
_NUMBER = (int, float)


def json_equal(a: Any, b: Any) -> bool:
    """Deep JSON equality: key order ignored, ``true`` never equals ``1``, ``1`` equals ``1.0``."""
    if type(a) is str:  # the common leaf (token name, version …): decided before the slower checks below
        return isinstance(b, str) and a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if type(a) is dict or isinstance(a, Mapping):  # ``type(...) is dict`` first: the ABC check costs more
        if not (type(b) is dict or isinstance(b, Mapping)) or len(a) != len(b):
            return False
        for k, v in a.items():  # noqa: SIM110 - a loop: no generator per call
            if k not in b or not json_equal(v, b[k]):
                return False
        return True
    if isinstance(a, _ARRAY):
        if not isinstance(b, _ARRAY) or len(a) != len(b):
            return False
        return all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, _NUMBER):
        return isinstance(b, _NUMBER) and a == b
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    return a is None and b is None


def _same_address(a: str, b: str, evm: bool) -> bool:
    return a.lower() == b.lower() if evm else a == b


def requirements_match(offer: PaymentRequirements, accepted: PaymentRequirements) -> bool:
    """True when ``accepted`` is the client's copy of ``offer``.

    Compared: ``scheme``, ``network``, ``amount``, ``maxTimeoutSeconds``, ``asset`` and ``payTo``
    (case-insensitive on ``eip155:*``) and ``extra`` (deep JSON equality). Unknown keys are ignored.
    """
    if (
        offer.scheme != accepted.scheme
        or offer.network != accepted.network
        or offer.amount != accepted.amount
        or offer.max_timeout_seconds != accepted.max_timeout_seconds
    ):
        return False
    evm = offer.network.startswith("eip155:")
    return (
        _same_address(offer.asset, accepted.asset, evm)
        and _same_address(offer.pay_to, accepted.pay_to, evm)
        and json_equal(offer.extra, accepted.extra)
    )


def find_matching_requirements(
    offers: Sequence[PaymentRequirements], accepted: PaymentRequirements
) -> PaymentRequirements | None:
    """The first of our ``offers`` that ``accepted`` matches (see :func:`requirements_match`), else ``None``.

    Returns our own offer object, which is what must be sent to the facilitator (checklist 13).
    """
    for offer in offers:
        if requirements_match(offer, accepted):
            return offer
    return None


def find_matching_v1(
    offers_v1: Sequence[PaymentRequirementsV1], payload_v1: PaymentPayloadV1
) -> PaymentRequirementsV1 | None:
    """v1 rule (TS): first offer with the same ``scheme`` and ``network`` (legacy name == its CAIP-2)."""
    network = to_caip2_or_none(payload_v1.network) or payload_v1.network
    for offer in offers_v1:
        if (
            offer.scheme == payload_v1.scheme
            and (to_caip2_or_none(offer.network) or offer.network) == network
        ):
            return offer
    return None


def select_requirements(accepts: Sequence[_T], supported: Callable[[_T], bool]) -> _T | None:
    """Client side: the first entry of ``accepts`` (server order) for which ``supported`` is true."""
    for requirements in accepts:
        if supported(requirements):
            return requirements
    return None
