"""``evm/charge`` with the EIP-3009 ``authorization`` credential (digest §11.4), settled by our facilitator.

The EIP-3009 nonce is the *challenge hash*. Two derivations exist in the wild and both are accepted:

* ``"concat"``: ``keccak256(id ‖ realm)`` — the spec's ``abi.encodePacked`` and mppx;
* ``"json"``: ``keccak256(JSON.stringify([id, realm]))`` — pympp 0.16.

Settlement turns the verified credential into an x402 ``exact`` (PaymentPayload, PaymentRequirements) pair
and hands it to ``ExactEvmFacilitator``, which re-verifies on chain, sends ``transferWithAuthorization`` and
checks the ``Transfer`` log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from paywire.errors import WireError
from paywire.evm.assets import Asset
from paywire.evm.crypto import address_bytes, keccak256, recover_address, to_checksum
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.evm.signer import EvmSigner
from paywire.mpp import problems as P
from paywire.mpp.challenge import Challenge
from paywire.mpp.credential import ChallengeEcho, Credential
from paywire.mpp.methods.base import Refused, Settled, Unknown, Verified
from paywire.mpp.problems import Problem
from paywire.mpp.server import Accepted
from paywire.mpp.timefmt import parse_rfc3339
from paywire.schemes.evm_exact.facilitator import ExactEvmFacilitator
from paywire.schemes.evm_exact.payload import Eip3009Authorization, ExactEvmPayload
from paywire.x402.models import PaymentPayload, PaymentRequirements

METHOD: Final = "evm"
INTENT: Final = "charge"
CREDENTIAL_TYPE: Final = "authorization"
CONCAT: Final = "concat"
JSON_ARRAY: Final = "json"
NONCE_VARIANTS: Final = (CONCAT, JSON_ARRAY)
DEFAULT_VALIDITY: Final = 300

_ADDR_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH_RE: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_SIG_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2}){65,}")
_UINT_RE: Final = re.compile(r"(0|[1-9][0-9]{0,77})")
_DID_PKH_RE: Final = re.compile(r"did:pkh:eip155:(0|[1-9][0-9]{0,15}):(0x[0-9a-fA-F]{40})")


def challenge_hash(challenge_id: str, realm: str, variant: str = CONCAT) -> bytes:
    """The 32-byte EIP-3009 nonce binding an authorization to one challenge."""
    if variant == CONCAT:
        return keccak256(challenge_id.encode("utf-8") + realm.encode("utf-8"))
    if variant == JSON_ARRAY:
        text = json.dumps([challenge_id, realm], separators=(",", ":"), ensure_ascii=False)
        return keccak256(text.encode("utf-8"))
    raise ValueError(f"unknown challenge-hash variant {variant!r}")


def did_pkh(chain_id: int, address: str) -> str:
    return f"did:pkh:eip155:{chain_id}:{to_checksum(address)}"


def chain_id_of(network: str) -> int:
    return int(network.split(":", 1)[1])


def evm_charge_request(asset: Asset, recipient: str, amount: int, *, description: str | None = None,
                       external_id: str | None = None) -> dict[str, Any]:
    """The ``request`` object of an ``evm/charge`` challenge (the shape both SDKs emit)."""
    req: dict[str, Any] = {
        "amount": str(amount),
        "currency": to_checksum(asset.address),
        "recipient": to_checksum(recipient),
        "methodDetails": {"chainId": chain_id_of(asset.network), "credentialTypes": [CREDENTIAL_TYPE],
                          "decimals": asset.decimals},
    }
    if description is not None:
        req["description"] = description
    if external_id is not None:
        req["externalId"] = external_id
    return req


@dataclass(frozen=True, slots=True)
class EvmAuthorization:
    """The ``{type: "authorization", from, to, value, validAfter, validBefore, nonce, signature}`` payload."""

    from_: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes
    signature: bytes

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> EvmAuthorization:
        if payload.get("type") != CREDENTIAL_TYPE:
            raise WireError("malformed_credential", "payload.type must be 'authorization'")
        checks = (("from", _ADDR_RE), ("to", _ADDR_RE), ("nonce", _HASH_RE), ("signature", _SIG_RE),
                  ("value", _UINT_RE), ("validAfter", _UINT_RE), ("validBefore", _UINT_RE))
        for key, pattern in checks:
            value = payload.get(key)
            if not isinstance(value, str) or pattern.fullmatch(value) is None:
                raise WireError("malformed_credential", f"payload.{key} is malformed")
        nums = [int(payload[k]) for k in ("value", "validAfter", "validBefore")]
        if any(n >= 2**256 for n in nums):
            raise WireError("malformed_credential", "payload number out of uint256 range")
        return cls(payload["from"], payload["to"], nums[0], nums[1], nums[2], bytes.fromhex(payload["nonce"][2:]),
                   bytes.fromhex(payload["signature"][2:]))

    def to_payload(self) -> dict[str, str]:
        return {"type": CREDENTIAL_TYPE, "from": self.from_, "to": self.to, "value": str(self.value),
                "validAfter": str(self.valid_after), "validBefore": str(self.valid_before),
                "nonce": "0x" + self.nonce.hex(), "signature": "0x" + self.signature.hex()}

    def digest(self, asset: Asset) -> bytes:
        return transfer_authorization_digest(
            domain_separator(asset.name, asset.version, chain_id_of(asset.network), asset.address),
            address_bytes(self.from_), address_bytes(self.to), self.value, self.valid_after, self.valid_before,
            self.nonce)


def to_x402(auth: EvmAuthorization, asset: Asset, *, max_timeout_seconds: int = DEFAULT_VALIDITY
            ) -> tuple[PaymentPayload, PaymentRequirements]:
    """The x402 ``exact`` pair our facilitator settles for this authorization."""
    req = PaymentRequirements(
        scheme="exact", network=asset.network, amount=auth.value, asset=asset.address, pay_to=auth.to,
        max_timeout_seconds=max_timeout_seconds,
        extra={"assetTransferMethod": "eip3009", "name": asset.name, "version": asset.version},
    )
    inner = ExactEvmPayload(auth.signature, Eip3009Authorization(
        auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce))
    return PaymentPayload(accepted=req, payload=inner.to_wire()), req


async def sign_evm_charge(challenge: Challenge, signer: EvmSigner, asset: Asset, *, variant: str = CONCAT,
                          now: float | None = None) -> Credential:
    """Buyer side: sign the challenge's charge (validBefore = challenge expiry) and build the credential."""
    req = challenge.request
    chain_id = chain_id_of(asset.network)
    details = req.get("methodDetails") or {}
    if not isinstance(details, Mapping) or details.get("chainId") != chain_id:
        raise ValueError("challenge is for another chain")
    if str(req.get("currency", "")).lower() != asset.address.lower():
        raise ValueError("challenge is for another token")
    t = time.time() if now is None else now
    valid_before = int(parse_rfc3339(challenge.expires)) if challenge.expires else int(t) + DEFAULT_VALIDITY
    auth = EvmAuthorization(signer.address, to_checksum(str(req["recipient"])), int(str(req["amount"])), 0,
                            valid_before, challenge_hash(challenge.id, challenge.realm, variant), b"")
    sig = await signer.sign_digest(auth.digest(asset))
    auth = EvmAuthorization(auth.from_, auth.to, auth.value, 0, valid_before, auth.nonce, sig)
    return Credential(ChallengeEcho.of(challenge), auth.to_payload(), did_pkh(chain_id, signer.address))


class EvmChargeMethod:
    """Seller side of ``evm/charge`` over our EIP-3009 facilitator."""

    method = METHOD
    intent = INTENT

    def __init__(
        self,
        facilitator: ExactEvmFacilitator | None,
        assets: Sequence[Asset],
        *,
        nonce_variants: Sequence[str] = NONCE_VARIANTS,
        max_validity: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.facilitator = facilitator
        self._assets = {(chain_id_of(a.network), a.address.lower()): a for a in assets}
        self.nonce_variants = tuple(nonce_variants)
        self.max_validity = max_validity
        self.clock = clock

    def verify(self, accepted: Accepted, now: float) -> Verified | Problem:
        """Checklist: types, splits, recipient, amount, challenge hash, window, signature, source."""
        ch = accepted.challenge
        req = ch.request
        details = req.get("methodDetails")
        if not isinstance(details, Mapping):
            return Problem(P.VERIFICATION_FAILED, "request has no methodDetails")
        chain_id, currency = details.get("chainId"), req.get("currency")
        asset = self._assets.get((chain_id, str(currency).lower())) if isinstance(chain_id, int) else None
        if asset is None:
            return Problem(P.VERIFICATION_FAILED, "this server does not settle that token on that chain")
        types = details.get("credentialTypes")
        if not isinstance(types, list) or CREDENTIAL_TYPE not in types:
            return Problem(P.VERIFICATION_FAILED, "authorization credentials are not accepted for this challenge")
        if details.get("splits"):
            return Problem(P.VERIFICATION_FAILED, "authorization credentials do not support splits")
        try:
            auth = EvmAuthorization.from_payload(accepted.credential.payload)
        except WireError as exc:
            return Problem(P.MALFORMED_CREDENTIAL, exc.detail)
        if address_bytes(auth.to) != address_bytes(str(req.get("recipient"))):
            return Problem(P.VERIFICATION_FAILED, "authorization recipient mismatch")
        amount = int(str(req.get("amount")))
        if auth.value < amount:
            return Problem(P.PAYMENT_INSUFFICIENT, f"authorization value {auth.value} is below {amount}")
        if auth.value != amount:
            return Problem(P.VERIFICATION_FAILED, "authorization value does not equal the amount")
        if not any(auth.nonce == challenge_hash(ch.id, ch.realm, v) for v in self.nonce_variants):
            return Problem(P.VERIFICATION_FAILED, "authorization challenge hash mismatch")
        t = int(now)
        if auth.valid_after > t:
            return Problem(P.VERIFICATION_FAILED, "authorization is not valid yet")
        if auth.valid_before <= t:
            return Problem(P.PAYMENT_EXPIRED, "authorization has expired")
        if auth.valid_before > max(t + self.max_validity, int(accepted.expires_at)):
            return Problem(P.VERIFICATION_FAILED, "authorization is valid for too long")
        sig = auth.signature
        if len(sig) != 65 or recover_address(auth.digest(asset), sig) != address_bytes(auth.from_):
            return Problem(P.VERIFICATION_FAILED, "authorization signature does not recover to from")
        source = accepted.credential.source
        if source is not None:
            m = _DID_PKH_RE.fullmatch(source)
            if m is None or int(m.group(1)) != chain_id or address_bytes(m.group(2)) != address_bytes(auth.from_):
                return Problem(P.VERIFICATION_FAILED, "credential source does not match the payer")
        key = f"evm:{chain_id}:{asset.address.lower()}:{auth.from_.lower()}:0x{auth.nonce.hex()}"
        return Verified(accepted, key, payer=to_checksum(auth.from_), amount=str(auth.value),
                        currency=asset.address, data=(auth, asset))

    async def settle(self, verified: Verified) -> Settled | Refused | Unknown:
        if self.facilitator is None:
            raise RuntimeError("EvmChargeMethod was built without a facilitator: it can verify, not settle")
        auth, asset = verified.data
        payload, req = to_x402(auth, asset)
        res = await self.facilitator.settle(payload, req)
        if res.success:
            return Settled(res.transaction, {"chainId": chain_id_of(asset.network)})
        reason, detail = res.error_reason or "", res.error_message or res.error_reason or "settlement failed"
        if reason == "settlement_unresolved":
            return Unknown(detail, res.transaction or None)
        if reason == "invalid_exact_evm_nonce_already_used":
            return Refused(P.forbidden("EVM authorization has already been used"), nothing_moved=False)
        if reason == "invalid_exact_evm_insufficient_balance":
            return Refused(Problem(P.PAYMENT_INSUFFICIENT, "payer balance is below the amount"))
        return Refused(Problem(P.VERIFICATION_FAILED, detail))
