"""Permit2 signature transfers as x402 uses them (digest §5.2, §7.1): the wire payload, its EIP-712 digest and
the calldata of the x402 Permit2 proxies. Pure: no I/O.

Two witness shapes share one payload (``{signature, permit2Authorization}``):

* ``exact``: ``Witness(address to,uint256 validAfter)``, spender the exact proxy, which pays the signed amount;
* ``upto``: ``Witness(address to,address facilitator,uint256 validAfter)``, spender the upto proxy, which pays
  any amount up to the signed one, and only when called by ``witness.facilitator``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Self

from eth_abi.abi import encode as abi_encode

from paywire.errors import WireError
from paywire.evm.crypto import address_bytes, keccak256
from paywire.x402 import reasons
from paywire.x402.models import _AMOUNT_RE, _get, _p, _req_address, _root, _type_error, _Wire

PERMIT2_ADDRESS: Final = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
EXACT_PROXY_ADDRESS: Final = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
UPTO_PROXY_ADDRESS: Final = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"

_DOMAIN_TYPEHASH: Final = keccak256(b"EIP712Domain(string name,uint256 chainId,address verifyingContract)")
_TOKEN_PERMISSIONS_TYPEHASH: Final = keccak256(b"TokenPermissions(address token,uint256 amount)")
_STUB: Final = b"PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,"
EXACT_WITNESS_TYPE_STRING: Final = (
    "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)")
UPTO_WITNESS_TYPE_STRING: Final = ("Witness witness)TokenPermissions(address token,uint256 amount)"
                                   "Witness(address to,address facilitator,uint256 validAfter)")
_EXACT_TYPEHASH: Final = keccak256(_STUB + EXACT_WITNESS_TYPE_STRING.encode())
_UPTO_TYPEHASH: Final = keccak256(_STUB + UPTO_WITNESS_TYPE_STRING.encode())
_EXACT_WITNESS_TYPEHASH: Final = keccak256(b"Witness(address to,uint256 validAfter)")
_UPTO_WITNESS_TYPEHASH: Final = keccak256(b"Witness(address to,address facilitator,uint256 validAfter)")
_ZERO12: Final = bytes(12)
_MAX_U256: Final = 2**256 - 1


def _u256(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _addr(a: str) -> bytes:
    return _ZERO12 + address_bytes(a)


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


@lru_cache(maxsize=64)
def domain_separator(chain_id: int, verifying_contract: str = PERMIT2_ADDRESS) -> bytes:
    """Permit2's EIP-712 domain: name ``Permit2``, chain id, contract (no version)."""
    return keccak256(_DOMAIN_TYPEHASH + keccak256(b"Permit2") + _u256(chain_id) + _addr(verifying_contract))


def _req_uint(d: dict[str, Any], key: str, path: str) -> int:
    """A uint256 as a decimal string (the SDKs' form) or ``0x`` hex (the upto spec's example nonce)."""
    value = _get(d, key, path)
    if not isinstance(value, str):
        raise _type_error(_p(path, key), "a decimal or 0x-hex string", value)
    try:
        if value[:2] in ("0x", "0X") and 2 < len(value) <= 66:
            n = int(value[2:], 16)
        elif _AMOUNT_RE.fullmatch(value) and len(value) <= 78:
            n = int(value)
        else:
            raise ValueError
    except ValueError:
        raise WireError(reasons.INVALID_PAYLOAD, f"{_p(path, key)} must be a uint256") from None
    if n > _MAX_U256:
        raise WireError(reasons.INVALID_PAYLOAD, f"{_p(path, key)} must be a uint256")
    return n


@dataclass(frozen=True, slots=True)
class Permit2Authorization(_Wire):
    """``permit2Authorization``: who signs (``from``), what (``permitted.token``/``amount``, the maximum for
    upto), for which spender (a proxy), nonce and deadline, and the witness (``to``, ``validAfter`` and, for
    upto, ``facilitator``)."""

    from_: str
    token: str
    amount: int
    spender: str
    nonce: int
    deadline: int
    to: str
    valid_after: int
    facilitator: str | None = None

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        permitted = _root(_get(d, "permitted", path), _p(path, "permitted"))
        w = _root(_get(d, "witness", path), _p(path, "witness"))
        pp, wp = _p(path, "permitted"), _p(path, "witness")
        return cls(
            from_=_req_address(d, "from", path, True),
            token=_req_address(permitted, "token", pp, True),
            amount=_req_uint(permitted, "amount", pp),
            spender=_req_address(d, "spender", path, True),
            nonce=_req_uint(d, "nonce", path),
            deadline=_req_uint(d, "deadline", path),
            to=_req_address(w, "to", wp, True),
            valid_after=_req_uint(w, "validAfter", wp),
            facilitator=_req_address(w, "facilitator", wp, True) if "facilitator" in w else None,
        )

    def to_wire(self) -> dict[str, Any]:
        witness: dict[str, Any] = {"to": self.to}
        if self.facilitator is not None:
            witness["facilitator"] = self.facilitator
        witness["validAfter"] = str(self.valid_after)
        return {
            "from": self.from_,
            "permitted": {"token": self.token, "amount": str(self.amount)},
            "spender": self.spender,
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
            "witness": witness,
        }

    def witness_hash(self) -> bytes:
        if self.facilitator is None:
            return keccak256(_EXACT_WITNESS_TYPEHASH + _addr(self.to) + _u256(self.valid_after))
        return keccak256(_UPTO_WITNESS_TYPEHASH + _addr(self.to) + _addr(self.facilitator) + _u256(self.valid_after))

    def digest(self, chain_id: int) -> bytes:
        """The EIP-712 digest of ``PermitWitnessTransferFrom`` the payer signs (and Permit2 checks)."""
        typehash = _EXACT_TYPEHASH if self.facilitator is None else _UPTO_TYPEHASH
        struct = keccak256(
            typehash
            + keccak256(_TOKEN_PERMISSIONS_TYPEHASH + _addr(self.token) + _u256(self.amount))
            + _addr(self.spender) + _u256(self.nonce) + _u256(self.deadline) + self.witness_hash()
        )
        return keccak256(b"\x19\x01" + domain_separator(chain_id) + struct)


@dataclass(frozen=True, slots=True)
class Permit2Payload(_Wire):
    """``PaymentPayload.payload`` for Permit2 transfers: ``{signature, permit2Authorization}``."""

    signature: bytes
    authorization: Permit2Authorization

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        sig = _get(d, "signature", path)
        if not isinstance(sig, str):
            raise _type_error(_p(path, "signature"), "a 0x-hex string", sig)
        try:
            if sig[:2] != "0x" or len(sig) < 6 or len(sig) % 2:
                raise ValueError
            raw = bytes.fromhex(sig[2:])
        except ValueError:
            raise WireError(reasons.INVALID_PAYLOAD, f"{_p(path, 'signature')} must be 0x + hex bytes") from None
        auth = Permit2Authorization._parse(_get(d, "permit2Authorization", path), _p(path, "permit2Authorization"),
                                           trusted)
        return cls(raw, auth)

    def to_wire(self) -> dict[str, Any]:
        return {"signature": "0x" + self.signature.hex(), "permit2Authorization": self.authorization.to_wire()}


def is_permit2_payload(payload: object) -> bool:
    """Whether a ``PaymentPayload.payload`` is shaped like a Permit2 one (it may still fail to parse)."""
    return isinstance(payload, dict) and "permit2Authorization" in payload


def claim_of(network: str, payload: dict[str, Any]) -> tuple[str, str] | None:
    """(claim key, payer) of a Permit2 payment: Permit2 spends a nonce once per owner (for every token), so
    ``permit2:<network>:<payer>:<nonce>``; None when the payload is not a Permit2 one."""
    try:
        a = Permit2Payload.from_wire(payload).authorization
    except WireError:
        return None
    return f"permit2:{network}:{a.from_.lower()}:{a.nonce:#066x}", a.from_


def ledger_fields(payload: dict[str, Any]) -> tuple[str | None, int | None]:
    """(nonce as 0x-hex, deadline) of a Permit2 payload, as the buyer's ledger keeps them."""
    try:
        a = Permit2Payload.from_wire(payload).authorization
    except WireError:
        return None, None
    return f"{a.nonce:#066x}", a.deadline


async def sign(signer: Any, requirements: Any, *, spender: str, facilitator: str | None, now: int,
               valid_after: int, nonce: int) -> dict[str, Any]:
    """The ``{signature, permit2Authorization}`` an ``EvmSigner`` makes for an offer (exact or upto)."""
    from paywire.x402.networks import evm_chain_id

    lifetime = requirements.max_timeout_seconds or 3600
    a = Permit2Authorization(
        from_=signer.address, token=requirements.asset, amount=requirements.amount, spender=spender, nonce=nonce,
        deadline=now + lifetime, to=requirements.pay_to, valid_after=valid_after, facilitator=facilitator,
    )
    signature = await signer.sign_digest(a.digest(evm_chain_id(requirements.network)))
    return Permit2Payload(signature, a).to_wire()


# -- calldata --------------------------------------------------------------------------------------------------

ALLOWANCE: Final = selector("allowance(address,address)")
APPROVE: Final = selector("approve(address,uint256)")
NONCE_BITMAP: Final = selector("nonceBitmap(address,uint256)")
_PERMIT_T = "((address,uint256),uint256,uint256)"
EXACT_SETTLE: Final = selector(f"settle({_PERMIT_T},address,(address,uint256),bytes)")
UPTO_SETTLE: Final = selector(f"settle({_PERMIT_T},uint256,address,(address,address,uint256),bytes)")
PERMIT_TRANSFER_FROM: Final = selector(f"permitTransferFrom({_PERMIT_T},(address,uint256),address,bytes)")


def allowance(owner: str, spender: str = PERMIT2_ADDRESS) -> bytes:
    return ALLOWANCE + abi_encode(["address", "address"], [owner, spender])


def approve(spender: str, amount: int) -> bytes:
    return APPROVE + abi_encode(["address", "uint256"], [spender, amount])


def nonce_bitmap(owner: str, nonce: int) -> bytes:
    """Calldata reading the bitmap word that holds ``nonce``'s bit (see :func:`nonce_used`)."""
    return NONCE_BITMAP + abi_encode(["address", "uint256"], [owner, nonce >> 8])


def nonce_used(word: int, nonce: int) -> bool:
    return bool(word >> (nonce & 0xFF) & 1)


def _permit_tuple(a: Permit2Authorization) -> tuple[tuple[str, int], int, int]:
    return ((a.token, a.amount), a.nonce, a.deadline)


def exact_settle(a: Permit2Authorization, signature: bytes) -> bytes:
    """``X402ExactPermit2Proxy.settle(permit, owner, witness, signature)``."""
    return EXACT_SETTLE + abi_encode(
        [_PERMIT_T, "address", "(address,uint256)", "bytes"],
        [_permit_tuple(a), a.from_, (a.to, a.valid_after), signature],
    )


def upto_settle(a: Permit2Authorization, amount: int, signature: bytes) -> bytes:
    """``X402UptoPermit2Proxy.settle(permit, amount, owner, witness, signature)``."""
    if a.facilitator is None:
        raise ValueError("an upto authorization names its facilitator in the witness")
    return UPTO_SETTLE + abi_encode(
        [_PERMIT_T, "uint256", "address", "(address,address,uint256)", "bytes"],
        [_permit_tuple(a), amount, a.from_, (a.to, a.facilitator, a.valid_after), signature],
    )


# -- the eip2612GasSponsoring extension: an EIP-2612 permit approving Permit2, sent with the settlement ----------

EIP2612_GAS_SPONSORING: Final = "eip2612GasSponsoring"
_DEC = r"0|[1-9][0-9]{0,77}"
_PERMIT_KEYS = ("from", "asset", "spender", "amount", "nonce", "deadline", "signature")


@dataclass(frozen=True, slots=True)
class Eip2612Permit:
    """``extensions.eip2612GasSponsoring.info``: the payer's EIP-2612 ``permit(owner, Permit2, value, deadline)``
    on the token, which the proxy's ``settleWithPermit`` submits before the transfer."""

    owner: str
    token: str
    spender: str
    value: int
    nonce: int
    deadline: int
    signature: bytes

    @classmethod
    def from_extensions(cls, extensions: Any) -> Eip2612Permit | None:
        """The permit in ``PaymentPayload.extensions``; None when absent or when ``info`` is not a permit (a
        client echoing the seller's declaration, whose info is a description). ``WireError`` when malformed."""
        ext = extensions.get(EIP2612_GAS_SPONSORING) if isinstance(extensions, dict) else None
        info = ext.get("info") if isinstance(ext, dict) else None
        if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in _PERMIT_KEYS):
            return None
        path = f"extensions.{EIP2612_GAS_SPONSORING}.info"
        sig = _get(info, "signature", path)
        try:
            if not isinstance(sig, str) or sig[:2] != "0x" or len(sig) != 132:
                raise ValueError
            raw = bytes.fromhex(sig[2:])
            ints = {k: info.get(k) for k in ("amount", "nonce", "deadline")}
            if not all(isinstance(v, str) and re.fullmatch(_DEC, v) for v in ints.values()):
                raise ValueError
        except ValueError:
            raise WireError(reasons.INVALID_PAYLOAD, f"{path}: a 65-byte signature and decimal amount, nonce "
                            "and deadline are required") from None
        return cls(_req_address(info, "from", path, True), _req_address(info, "asset", path, True),
                   _req_address(info, "spender", path, True), int(str(ints["amount"])), int(str(ints["nonce"])),
                   int(str(ints["deadline"])), raw)

    def as_tuple(self) -> tuple[int, int, bytes, bytes, int]:
        """``(value, deadline, r, s, v)`` as the proxies take it."""
        v = self.signature[64]
        return (self.value, self.deadline, self.signature[:32], self.signature[32:64], v if v >= 27 else v + 27)


EIP2612_PERMIT_TYPEHASH: Final = keccak256(
    b"Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)")
NONCES: Final = selector("nonces(address)")


def eip2612_digest(token_domain: bytes, owner: str, value: int, nonce: int, deadline: int,
                   spender: str = PERMIT2_ADDRESS) -> bytes:
    """The EIP-712 digest of the token's ``Permit(owner, spender, value, nonce, deadline)``."""
    struct = keccak256(EIP2612_PERMIT_TYPEHASH + _addr(owner) + _addr(spender) + _u256(value) + _u256(nonce)
                       + _u256(deadline))
    return keccak256(b"\x19\x01" + token_domain + struct)


def eip2612_extension(owner: str, token: str, value: int, nonce: int, deadline: int, signature: bytes,
                      ) -> dict[str, Any]:
    """``{eip2612GasSponsoring: {info}}`` for ``PaymentPayload.extensions``."""
    return {EIP2612_GAS_SPONSORING: {"info": {
        "from": owner, "asset": token, "spender": PERMIT2_ADDRESS, "amount": str(value), "nonce": str(nonce),
        "deadline": str(deadline), "signature": "0x" + signature.hex(), "version": "1"}}}


_P2612_T = "(uint256,uint256,bytes32,bytes32,uint8)"
EXACT_SETTLE_WITH_PERMIT: Final = selector(f"settleWithPermit({_P2612_T},{_PERMIT_T},address,(address,uint256),bytes)")
UPTO_SETTLE_WITH_PERMIT: Final = selector(
    f"settleWithPermit({_P2612_T},{_PERMIT_T},uint256,address,(address,address,uint256),bytes)")


def settle_calldata(a: Permit2Authorization, amount: int, signature: bytes, permit: Eip2612Permit | None = None,
                    ) -> bytes:
    """The proxy call for ``a``: exact or upto (by the witness), ``settleWithPermit`` when ``permit`` is given."""
    if permit is None:
        return exact_settle(a, signature) if a.facilitator is None else upto_settle(a, amount, signature)
    if a.facilitator is None:
        return EXACT_SETTLE_WITH_PERMIT + abi_encode(
            [_P2612_T, _PERMIT_T, "address", "(address,uint256)", "bytes"],
            [permit.as_tuple(), _permit_tuple(a), a.from_, (a.to, a.valid_after), signature])
    return UPTO_SETTLE_WITH_PERMIT + abi_encode(
        [_P2612_T, _PERMIT_T, "uint256", "address", "(address,address,uint256)", "bytes"],
        [permit.as_tuple(), _permit_tuple(a), amount, a.from_, (a.to, a.facilitator, a.valid_after), signature])


# -- custom errors of Permit2 and the proxies, by selector -------------------------------------------------------

_ERRORS: Final = {
    selector(s)[:4]: s.split("(", 1)[0]
    for s in (
        "SignatureExpired(uint256)", "InvalidAmount(uint256)", "InvalidNonce()", "InvalidSignature()",
        "InvalidSigner()", "InvalidSignatureLength()", "InvalidContractSignature()", "TransferFromFailed()",
        "InvalidDestination()", "PaymentTooEarly()", "InvalidOwner()", "InvalidAmount()",
        "Permit2612AmountMismatch()", "Reentrancy()", "UnauthorizedFacilitator()", "AmountExceedsPermitted()",
    )
}


def error_name(data: bytes) -> str | None:
    """The Permit2 / proxy custom error a revert's data carries, or None."""
    return _ERRORS.get(bytes(data[:4]))


__all__ = [
    "EIP2612_GAS_SPONSORING",
    "EXACT_PROXY_ADDRESS",
    "EXACT_WITNESS_TYPE_STRING",
    "PERMIT2_ADDRESS",
    "UPTO_PROXY_ADDRESS",
    "UPTO_WITNESS_TYPE_STRING",
    "Eip2612Permit",
    "Permit2Authorization",
    "Permit2Payload",
    "allowance",
    "approve",
    "claim_of",
    "domain_separator",
    "eip2612_digest",
    "eip2612_extension",
    "error_name",
    "exact_settle",
    "is_permit2_payload",
    "ledger_fields",
    "nonce_bitmap",
    "nonce_used",
    "settle_calldata",
    "sign",
    "upto_settle",
]
