"""``tempo/charge`` (draft-tempo-charge-00): one TIP-20 transfer on Tempo, as an exact wire format.

Everything here is offline and exact: the ``request`` builder and strict parser, the three credential payloads
(``hash`` — push mode, ``transaction`` — a signed 0x76 Tempo transaction, ``proof`` — an EIP-712 signature for
zero-amount challenges, mppx only), the decoding of the signed transaction (chain, calls, validity window,
secp256k1 sender recovery), the challenge-bound attribution memo carried by ``transferWithMemo``, and the proof
digest. Field names and constants were read from pympp 0.16 and mppx 0.11.

Settlement needs a Tempo node (broadcast a pull-mode transaction, or read the receipt of a pushed one):
:class:`TempoChargeMethod` refuses to settle those unless a live :class:`TempoSettler` is configured. Proof
credentials move no money and settle offline (reference = challenge id, as mppx does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import rlp

from paywire.errors import WireError
from paywire.evm.crypto import keccak256, recover_address, to_checksum
from paywire.mpp import problems as P
from paywire.mpp.challenge import Challenge
from paywire.mpp.credential import ChallengeEcho, Credential
from paywire.mpp.methods.base import Refused, Settled, Unknown, Verified, parse_charge, reject_unknown
from paywire.mpp.problems import Problem
from paywire.mpp.server import Accepted, Offer

METHOD: Final = "tempo"
INTENT: Final = "charge"
CHAIN_ID: Final = 4217
TESTNET_CHAIN_ID: Final = 42431  # Moderato
DEFAULT_CHAIN_ID: Final = CHAIN_ID  # pympp's MethodDetails default when the request names none
PATH_USD: Final = "0x20c0000000000000000000000000000000000000"
USDC: Final = "0x20C000000000000000000000b9537d11c60E8b50"
DEFAULT_DECIMALS: Final = 6
MAX_SPLITS: Final = 10
CHARGE_MODES: Final = ("push", "pull")

HASH: Final = "hash"
TRANSACTION: Final = "transaction"
PROOF: Final = "proof"
PAYLOAD_TYPES: Final = (HASH, TRANSACTION, PROOF)

TX_TYPE: Final = 0x76
FEE_PAYER_ENVELOPE_TYPE: Final = 0x78
TRANSFER_SELECTOR: Final = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
TRANSFER_WITH_MEMO_SELECTOR: Final = bytes.fromhex("95777d59")  # transferWithMemo(address,uint256,bytes32)
ATTRIBUTION_TAG: Final = keccak256(b"mpp")[:4]
ATTRIBUTION_VERSION: Final = 1
PROOF_DOMAIN_NAME: Final = "MPP"
PROOF_DOMAIN_VERSION: Final = "3"

_ADDR_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH_RE: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_HEX_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})+")
_UINT_RE: Final = re.compile(r"0|[1-9][0-9]{0,77}")
_DID_PKH_RE: Final = re.compile(r"did:pkh:eip155:(0|[1-9][0-9]{0,15}):(0x[0-9a-fA-F]{40})")
_REQUEST_KEYS: Final = frozenset({"amount", "currency", "recipient", "description", "externalId", "extra",
                                  "methodDetails"})
_DETAIL_KEYS: Final = frozenset({"chainId", "feePayer", "feePayerUrl", "splits", "supportedModes",
                                 "machineTokenEnabled"})


# -- attribution memo ---------------------------------------------------------------------------------------
def attribution_memo(challenge_id: str, server_id: str, client_id: str | None = None) -> bytes:
    """The 32-byte memo: tag(4) ‖ version(1) ‖ keccak(server)[:10] ‖ keccak(client)[:10] or zeros ‖ keccak(id)[:7]."""
    client = keccak256(client_id.encode("utf-8"))[:10] if client_id else bytes(10)
    return (ATTRIBUTION_TAG + bytes([ATTRIBUTION_VERSION]) + keccak256(server_id.encode("utf-8"))[:10] + client
            + keccak256(challenge_id.encode("utf-8"))[:7])


def is_attribution_memo(memo: bytes) -> bool:
    return len(memo) == 32 and memo[:4] == ATTRIBUTION_TAG and memo[4] == ATTRIBUTION_VERSION


def memo_binds(memo: bytes, challenge_id: str, realm: str) -> bool:
    """An MPP memo naming this server (realm) and this challenge."""
    return (is_attribution_memo(memo) and memo[5:15] == keccak256(realm.encode("utf-8"))[:10]
            and memo[25:32] == keccak256(challenge_id.encode("utf-8"))[:7])


# -- request ------------------------------------------------------------------------------------------------
def _uint(value: Any, what: str) -> int:
    if not isinstance(value, str) or _UINT_RE.fullmatch(value) is None:
        raise WireError("invalid_request", f"{what} must be a base-unit integer string")
    n = int(value)
    if n >= 2**256:
        raise WireError("invalid_request", f"{what} is out of uint256 range")
    return n


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or _ADDR_RE.fullmatch(value) is None:
        raise WireError("invalid_request", f"{what} must be a 0x address")
    return value


@dataclass(frozen=True, slots=True)
class TempoSplit:
    """Part of the amount paid to another recipient (base units), optionally with its own 32-byte memo."""

    amount: int
    recipient: str
    memo: bytes | None = None

    def to_wire(self) -> dict[str, str]:
        out = {"amount": str(self.amount), "recipient": self.recipient}
        if self.memo is not None:
            out["memo"] = "0x" + self.memo.hex()
        return out


@dataclass(frozen=True, slots=True)
class TempoChargeRequest:
    """The ``request`` of a ``tempo/charge`` challenge; ``chain_id`` None means the SDK default (4217)."""

    amount: int
    currency: str
    recipient: str
    chain_id: int | None = None
    fee_payer: bool | None = None
    fee_payer_url: str | None = None
    splits: tuple[TempoSplit, ...] | None = None
    supported_modes: tuple[str, ...] | None = None
    machine_token_enabled: bool | None = None
    description: str | None = None
    external_id: str | None = None
    extra: Mapping[str, str] | None = None

    @property
    def effective_chain_id(self) -> int:
        return DEFAULT_CHAIN_ID if self.chain_id is None else self.chain_id

    @classmethod
    def from_request(cls, req: Mapping[str, Any]) -> TempoChargeRequest:
        """Strict parse; ``WireError("invalid_request")`` names the first problem."""
        reject_unknown(req, _REQUEST_KEYS, "request", "invalid_request")
        amount = _uint(req.get("amount"), "amount")
        currency = _address(req.get("currency"), "currency")
        recipient = _address(req.get("recipient"), "recipient")
        description, external_id = req.get("description"), req.get("externalId")
        for key, value in (("description", description), ("externalId", external_id)):
            if value is not None and not isinstance(value, str):
                raise WireError("invalid_request", f"{key} must be a string")
        extra = req.get("extra")
        if extra is not None and (not isinstance(extra, dict)
                                  or not all(isinstance(v, str) for v in extra.values())):
            raise WireError("invalid_request", "extra must be a string-to-string map")
        details = req.get("methodDetails", {})
        if not isinstance(details, dict):
            raise WireError("invalid_request", "methodDetails must be an object")
        reject_unknown(details, _DETAIL_KEYS, "methodDetails", "invalid_request")
        chain_id = details.get("chainId")
        if chain_id is not None and (type(chain_id) is not int or chain_id <= 0):
            raise WireError("invalid_request", "methodDetails.chainId must be a positive integer")
        flags: dict[str, bool | None] = {}
        for key in ("feePayer", "machineTokenEnabled"):
            flag = details.get(key)
            if flag is not None and not isinstance(flag, bool):
                raise WireError("invalid_request", f"methodDetails.{key} must be a boolean")
            flags[key] = flag
        fee_payer_url = details.get("feePayerUrl")
        if fee_payer_url is not None and not isinstance(fee_payer_url, str):
            raise WireError("invalid_request", "methodDetails.feePayerUrl must be a string")
        modes = details.get("supportedModes")
        if modes is not None and (not isinstance(modes, list) or not modes
                                  or not all(m in CHARGE_MODES for m in modes)):
            raise WireError("invalid_request", "methodDetails.supportedModes must list 'push'/'pull'")
        splits = _parse_splits(details.get("splits"), amount)
        return cls(amount, currency, recipient, chain_id, flags["feePayer"], fee_payer_url, splits,
                   tuple(modes) if modes is not None else None, flags["machineTokenEnabled"], description,
                   external_id, dict(extra) if extra is not None else None)

    def to_request(self) -> dict[str, Any]:
        """The wire object (JCS-encoded into the challenge, so key order is irrelevant)."""
        req: dict[str, Any] = {"amount": str(self.amount), "currency": self.currency, "recipient": self.recipient}
        if self.description is not None:
            req["description"] = self.description
        if self.external_id is not None:
            req["externalId"] = self.external_id
        if self.extra is not None:
            req["extra"] = dict(self.extra)
        details: dict[str, Any] = {}
        if self.chain_id is not None:
            details["chainId"] = self.chain_id
        if self.fee_payer is not None:
            details["feePayer"] = self.fee_payer
        if self.fee_payer_url is not None:
            details["feePayerUrl"] = self.fee_payer_url
        if self.machine_token_enabled is not None:
            details["machineTokenEnabled"] = self.machine_token_enabled
        if self.splits is not None:
            details["splits"] = [s.to_wire() for s in self.splits]
        if self.supported_modes is not None:
            details["supportedModes"] = list(self.supported_modes)
        if details:
            req["methodDetails"] = details
        return req

    def expected_transfers(self) -> list[TempoSplit]:
        """Primary transfer first (amount less the splits, memo None = the attribution memo), then splits."""
        splits = self.splits or ()
        primary = TempoSplit(self.amount - sum(s.amount for s in splits), self.recipient)
        return [primary, *splits]


def _parse_splits(raw: Any, amount: int) -> tuple[TempoSplit, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_SPLITS:
        raise WireError("invalid_request", f"methodDetails.splits must list 1 to {MAX_SPLITS} splits")
    out = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or set(s) - {"amount", "recipient", "memo"}:
            raise WireError("invalid_request", f"split {i} is malformed")
        memo = s.get("memo")
        if memo is not None and (not isinstance(memo, str) or _HASH_RE.fullmatch(memo) is None):
            raise WireError("invalid_request", f"split {i} memo must be 32 bytes of hex")
        memo_bytes = bytes.fromhex(memo[2:]) if memo is not None else None
        if memo_bytes is not None and is_attribution_memo(memo_bytes):
            raise WireError("invalid_request", f"split {i} memo must not use MPP attribution")
        split = TempoSplit(_uint(s.get("amount"), f"split {i} amount"), _address(s.get("recipient"), "recipient"),
                           memo_bytes)
        if split.amount == 0:
            raise WireError("invalid_request", f"split {i} amount must be positive")
        out.append(split)
    if sum(s.amount for s in out) >= amount:
        raise WireError("invalid_request", "splits must leave a positive primary amount")
    return tuple(out)


def tempo_charge_request(amount: int, currency: str, recipient: str, *, chain_id: int | None = None,
                         fee_payer: bool | None = None, splits: Sequence[TempoSplit] | None = None,
                         supported_modes: Sequence[str] | None = None, description: str | None = None,
                         external_id: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A validated ``tempo/charge`` request (``amount`` in base units, token and recipient as given)."""
    req = TempoChargeRequest(amount, currency, recipient, chain_id, fee_payer, None,
                             tuple(splits) if splits is not None else None,
                             tuple(supported_modes) if supported_modes is not None else None, None,
                             description, external_id, dict(extra) if extra is not None else None)
    if splits and fee_payer:
        raise ValueError("splits and fee sponsorship cannot be combined (pympp refuses it)")
    wire = req.to_request()
    TempoChargeRequest.from_request(wire)
    return wire


def tempo_offer(amount: int, currency: str, recipient: str, *, description: str | None = None,
                **kw: Any) -> Offer:
    """A route offer for :class:`paywire.mpp.server.MppServer` (challenge ``description`` separate)."""
    return Offer(METHOD, INTENT, tempo_charge_request(amount, currency, recipient, **kw), description=description)


# -- credential payloads ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TempoPayload:
    """``{type: "hash", hash}`` | ``{type: "transaction", signature}`` | ``{type: "proof", signature}``."""

    type: str
    value: bytes

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TempoPayload:
        kind = payload.get("type")
        if kind not in PAYLOAD_TYPES:
            raise WireError("malformed_credential", "payload.type must be 'hash', 'transaction' or 'proof'")
        key = "hash" if kind == HASH else "signature"
        if set(payload) != {"type", key}:
            raise WireError("malformed_credential", f"a {kind} payload has exactly the keys type and {key}")
        value = payload[key]
        pattern = _HASH_RE if kind == HASH else _HEX_RE
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise WireError("malformed_credential", f"payload.{key} is not 0x-hex" + (" of 32 bytes" if kind == HASH
                                                                                       else ""))
        return cls(str(kind), bytes.fromhex(value[2:]))

    def to_payload(self) -> dict[str, str]:
        return {"type": self.type, ("hash" if self.type == HASH else "signature"): "0x" + self.value.hex()}


# -- RLP (the ``rlp`` package: strict, canonical) and the 0x76 transaction ----------------------------------
RlpItem = bytes | list["RlpItem"]


def rlp_encode(item: RlpItem) -> bytes:
    return bytes(rlp.encode(item))


def rlp_decode(data: bytes) -> RlpItem:
    """Decode exactly one canonical RLP item spanning ``data``; ``WireError`` otherwise."""
    try:
        item: RlpItem = rlp.decode(data, strict=True)
    except rlp.DecodingError as exc:
        raise WireError("invalid_rlp", str(exc).split("\n", 1)[0]) from None
    return item


def _rint(item: RlpItem, what: str) -> int:
    if not isinstance(item, bytes) or item[:1] == b"\x00":
        raise WireError("invalid_transaction", f"{what} is not a canonical integer")
    return int.from_bytes(item, "big")


@dataclass(frozen=True, slots=True)
class TempoCall:
    to: bytes
    value: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TempoTransaction:
    """A decoded, sender-signed Tempo transaction (type 0x76)."""

    raw: bytes
    chain_id: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    calls: tuple[TempoCall, ...]
    nonce_key: int
    nonce: int
    valid_before: int | None
    valid_after: int | None
    fee_token: bytes | None
    fee_payer: str  # "none", "pending" (sender asks for sponsorship) or "signed"
    signature: bytes
    declared_sender: str | None = None  # what a 0x78 envelope says the sender is
    fields: list[RlpItem] = field(repr=False, default_factory=list)

    @property
    def hash(self) -> bytes:
        """keccak of the bytes as sent (the chain hash only for a 0x76 transaction that needs no co-signer)."""
        return keccak256(self.raw)

    def sign_payload(self) -> bytes:
        """What the sender signed: the envelope without its signature, fee payer normalized to the marker."""
        body = list(self.fields[:-1])
        if self.fee_payer != "none":
            body[10], body[11] = b"", b"\x00"
        return keccak256(bytes([TX_TYPE]) + rlp_encode(body))

    def sender(self) -> str | None:
        """Checksummed sender for a plain secp256k1 signature; None for other signature kinds or a bad one."""
        if len(self.signature) != 65:
            return None
        addr = recover_address(self.sign_payload(), self.signature)
        return to_checksum(addr) if addr is not None else None


def decode_tempo_transaction(raw: bytes) -> TempoTransaction:
    """Parse ``0x76 ‖ rlp([13 fields, keyAuthorization?, signature])`` or the 0x78 fee-payer envelope (field 11
    = the sender's address, awaiting the sponsor's signature); ``WireError`` on any deviation."""
    kind = raw[:1]
    if kind not in (bytes([TX_TYPE]), bytes([FEE_PAYER_ENVELOPE_TYPE])):
        raise WireError("invalid_transaction", "not a Tempo (0x76/0x78) transaction")
    fields = rlp_decode(raw[1:])
    if not isinstance(fields, list) or len(fields) not in (14, 15):
        raise WireError("invalid_transaction", "a Tempo transaction has 14 or 15 fields")
    sig = fields[-1]
    if not isinstance(sig, bytes) or not sig:
        raise WireError("invalid_transaction", "the transaction is not signed")
    raw_calls, access_list, auths = fields[4], fields[5], fields[12]
    if not isinstance(raw_calls, list) or not raw_calls:
        raise WireError("invalid_transaction", "the transaction has no calls")
    if access_list != [] or auths != []:
        raise WireError("invalid_transaction", "access lists and authorization lists are not accepted")
    calls = []
    for c in raw_calls:
        if not isinstance(c, list) or len(c) != 3:
            raise WireError("invalid_transaction", "malformed call")
        to, value, data = c
        if not isinstance(to, bytes) or not isinstance(data, bytes) or len(to) != 20:
            raise WireError("invalid_transaction", "malformed call")
        calls.append(TempoCall(to, _rint(value, "call value"), data))
    fee_token, payer = fields[10], fields[11]
    if not isinstance(fee_token, bytes) or len(fee_token) not in (0, 20):
        raise WireError("invalid_transaction", "bad fee token")
    declared: str | None = None
    if kind == bytes([FEE_PAYER_ENVELOPE_TYPE]):
        if not isinstance(payer, bytes) or len(payer) not in (1, 20) or payer == b"\x01":
            raise WireError("invalid_transaction", "a fee-payer envelope names its sender")
        fee_payer = "pending"
        declared = to_checksum(payer) if len(payer) == 20 else None
    elif payer == b"":
        fee_payer = "none"
    elif payer == b"\x00":
        fee_payer = "pending"
    elif isinstance(payer, list):
        fee_payer = "signed"
    else:
        raise WireError("invalid_transaction", "bad fee payer field")
    vb, va = fields[8], fields[9]
    return TempoTransaction(
        raw, _rint(fields[0], "chainId"), _rint(fields[1], "maxPriorityFeePerGas"),
        _rint(fields[2], "maxFeePerGas"), _rint(fields[3], "gas"), tuple(calls), _rint(fields[6], "nonceKey"),
        _rint(fields[7], "nonce"), None if vb == b"" else _rint(vb, "validBefore"),
        None if va == b"" else _rint(va, "validAfter"), fee_token or None, fee_payer, sig, declared, fields)


def decode_transfer_call(data: bytes) -> TempoSplit | None:
    """``transfer(to, amount)`` or ``transferWithMemo(to, amount, memo)`` call data, else None."""
    sel, args = data[:4], data[4:]
    if (sel == TRANSFER_SELECTOR and len(args) == 64) or (sel == TRANSFER_WITH_MEMO_SELECTOR and len(args) == 96):
        if args[:12] != bytes(12):
            return None
        return TempoSplit(int.from_bytes(args[32:64], "big"), to_checksum(args[12:32]),
                          args[64:96] if len(args) == 96 else None)
    return None


def encode_transfer_call(recipient: str, amount: int, memo: bytes | None = None) -> bytes:
    to = bytes(12) + bytes.fromhex(recipient[2:])
    if memo is None:
        return TRANSFER_SELECTOR + to + amount.to_bytes(32, "big")
    return TRANSFER_WITH_MEMO_SELECTOR + to + amount.to_bytes(32, "big") + memo


# -- zero-amount proof --------------------------------------------------------------------------------------
def proof_digest(chain_id: int, account: str, challenge_id: str, realm: str) -> bytes:
    """EIP-712 digest of ``Proof(address account,string challengeId,string realm)`` in domain MPP/3/chainId."""
    domain_type = keccak256(b"EIP712Domain(string name,string version,uint256 chainId)")
    domain = keccak256(domain_type + keccak256(PROOF_DOMAIN_NAME.encode()) + keccak256(PROOF_DOMAIN_VERSION.encode())
                       + chain_id.to_bytes(32, "big"))
    proof_type = keccak256(b"Proof(address account,string challengeId,string realm)")
    struct = keccak256(proof_type + bytes(12) + bytes.fromhex(account[2:]) + keccak256(challenge_id.encode("utf-8"))
                       + keccak256(realm.encode("utf-8")))
    return keccak256(b"\x19\x01" + domain + struct)


def parse_did_pkh(source: str | None) -> tuple[int, str] | None:
    m = _DID_PKH_RE.fullmatch(source or "")
    return (int(m.group(1)), to_checksum(m.group(2))) if m else None


# -- seller side --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TempoCheck:
    """What ``verify`` established; a settler gets it in ``Verified.data``."""

    request: TempoChargeRequest
    payload: TempoPayload
    transaction: TempoTransaction | None = None


class TempoSettler(Protocol):
    """A live Tempo backend: broadcasts pull-mode transactions, confirms pushed hashes (their receipts' logs)."""

    async def settle(self, verified: Verified, check: TempoCheck) -> Settled | Refused | Unknown: ...


def no_backend(method: str) -> Refused:
    """503 without a challenge: this server can parse and check the credential but cannot settle it."""
    return Refused(Problem(P.VERIFICATION_FAILED, f"no live {method} backend is configured on this server",
                           status=503, title="Settlement Unavailable"))


def tempo_credential(challenge: Challenge, payload: TempoPayload, *, source: str | None = None) -> Credential:
    """Buyer side: wrap an already produced hash / signed transaction / proof."""
    return Credential(ChallengeEcho.of(challenge), payload.to_payload(), source)


class TempoChargeMethod:
    """Seller side of ``tempo/charge``: exact offline checks; money moves only through ``settler``."""

    method = METHOD
    intent = INTENT

    def __init__(self, settler: TempoSettler | None = None, *, max_validity: int = 3600) -> None:
        self.settler = settler
        self.max_validity = max_validity

    def verify(self, accepted: Accepted, now: float) -> Verified | Problem:
        ch = accepted.challenge
        parsed = parse_charge(accepted, TempoChargeRequest.from_request, TempoPayload.from_payload)
        if isinstance(parsed, Problem):
            return parsed
        req, payload = parsed
        chain_id = req.effective_chain_id
        source = accepted.credential.source
        pkh = parse_did_pkh(source)
        if source is not None and (pkh is None or pkh[0] != chain_id):
            return Problem(P.VERIFICATION_FAILED, "credential source is not a did:pkh on this chain")
        if payload.type == PROOF:
            return self._verify_proof(accepted, req, payload, pkh)
        if req.amount == 0:
            return Problem(P.VERIFICATION_FAILED, "a zero-amount challenge is answered with a proof")
        if payload.type == HASH:
            key = f"tempo:{chain_id}:hash:0x{payload.value.hex()}"  # the payer is only known from the receipt
            return Verified(accepted, key, amount=str(req.amount),
                            currency=req.currency, data=TempoCheck(req, payload))
        try:
            tx = decode_tempo_transaction(payload.value)
        except WireError as exc:
            return Problem(P.MALFORMED_CREDENTIAL, f"transaction: {exc.detail}")
        problem = self._check_transaction(tx, req, ch.id, ch.realm, now, accepted.expires_at)
        if problem is not None:
            return problem
        sender = tx.sender()
        if tx.declared_sender is not None and sender != tx.declared_sender:
            return Problem(P.VERIFICATION_FAILED, "fee-payer envelope names another sender than the signer")
        if pkh is not None and sender is not None and pkh[1] != sender:
            return Problem(P.VERIFICATION_FAILED, "credential source does not match the transaction sender")
        key = f"tempo:{chain_id}:tx:0x{tx.sign_payload().hex()}"
        return Verified(accepted, key, payer=sender, amount=str(req.amount), currency=req.currency,
                        data=TempoCheck(req, payload, tx))

    def _verify_proof(self, accepted: Accepted, req: TempoChargeRequest, payload: TempoPayload,
                      pkh: tuple[int, str] | None) -> Verified | Problem:
        ch = accepted.challenge
        if req.amount != 0:
            return Problem(P.VERIFICATION_FAILED, "proof credentials are only valid for zero-amount challenges")
        if pkh is None:
            return Problem(P.VERIFICATION_FAILED, "a proof credential needs a did:pkh source")
        sig = payload.value
        digest = proof_digest(req.effective_chain_id, pkh[1], ch.id, ch.realm)
        signer = recover_address(digest, sig) if len(sig) == 65 else None
        if signer is None or to_checksum(signer) != pkh[1]:
            return Problem(P.VERIFICATION_FAILED, "proof signature does not recover to the source account")
        return Verified(accepted, f"tempo:proof:{ch.id}", payer=pkh[1], amount="0", currency=req.currency,
                        data=TempoCheck(req, payload))

    def _check_transaction(self, tx: TempoTransaction, req: TempoChargeRequest, challenge_id: str, realm: str,
                           now: float, expires_at: float) -> Problem | None:
        if tx.chain_id != req.effective_chain_id:
            return Problem(P.VERIFICATION_FAILED, "transaction chain id does not match the challenge")
        if tx.fee_payer != "none" and not req.fee_payer:
            return Problem(P.VERIFICATION_FAILED, "the challenge does not offer fee sponsorship")
        if req.supported_modes is not None and "pull" not in req.supported_modes:
            return Problem(P.VERIFICATION_FAILED, "the challenge does not accept signed transactions")
        t = int(now)
        if tx.valid_before is None:
            return Problem(P.VERIFICATION_FAILED, "transaction has no validBefore")
        if tx.valid_before <= t:
            return Problem(P.PAYMENT_EXPIRED, "transaction validity has ended")
        if tx.valid_before > int(expires_at) + 1 or tx.valid_before > t + self.max_validity:
            return Problem(P.VERIFICATION_FAILED, "transaction outlives the challenge")
        if tx.valid_after is not None and tx.valid_after > t:
            return Problem(P.VERIFICATION_FAILED, "transaction is not valid yet")
        want = req.expected_transfers()
        token = bytes.fromhex(req.currency[2:])
        got: list[TempoSplit] = []
        for call in tx.calls:
            transfer = decode_transfer_call(call.data)
            if call.to != token or call.value != 0 or transfer is None:
                return Problem(P.VERIFICATION_FAILED, "transaction makes a call other than a token transfer")
            got.append(transfer)
        if len(got) != len(want):
            return Problem(P.VERIFICATION_FAILED, "transaction transfers do not match the request")
        primary, *splits = want
        bound = False
        for w in [primary, *splits]:
            match = next((g for g in got if g.recipient.lower() == w.recipient.lower() and g.amount == w.amount
                          and (w.memo is None or g.memo == w.memo)), None)
            if match is None:
                return Problem(P.VERIFICATION_FAILED, "transaction transfers do not match the request")
            got.remove(match)
            if match.memo is not None and is_attribution_memo(match.memo):
                if not memo_binds(match.memo, challenge_id, realm):
                    return Problem(P.VERIFICATION_FAILED, "transfer memo is bound to another challenge")
                bound = bound or w is primary
        if not bound:
            return Problem(P.VERIFICATION_FAILED, "the primary transfer carries no memo bound to this challenge")
        return None

    async def settle(self, verified: Verified) -> Settled | Refused | Unknown:
        """Proofs settle offline; transactions and hashes need the configured :class:`TempoSettler`."""
        check: TempoCheck = verified.data
        if check.payload.type == PROOF:
            return Settled(verified.accepted.challenge.id)
        if self.settler is None:
            return no_backend(METHOD)
        return await self.settler.settle(verified, check)
