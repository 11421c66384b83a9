"""Signed offers and receipts: the x402 ``offer-receipt`` extension (sans-I/O).

A seller signs each ``accepts[]`` entry of its 402 (``extensions["offer-receipt"].info.offers``) and, on a
paid response, a receipt (``PAYMENT-RESPONSE``'s ``extensions["offer-receipt"].info.receipt``), so the buyer's
owner can later prove what was promised and that it was paid for. Two formats, as in the spec:

* ``eip712`` — ``{format, payload, signature}``: an EIP-712 signature (domain ``{name: "x402 offer"`` /
  ``"x402 receipt", version: "1", chainId: 1}``, the spec's fixed ``Offer`` / ``Receipt`` types) by a
  secp256k1 key; the signer is the recovered address (the simplest deployment signs with ``payTo``'s key).
* ``jws`` — ``{format, signature}``: a JWS compact string over the JCS (RFC 8785) form of the payload,
  ``EdDSA`` (Ed25519) or ``ES256K`` (secp256k1), with ``kid`` a DID URL (``did:key:…#…``) naming the key.

:class:`ArtifactSigner` signs; :func:`verify_offer` / :func:`verify_receipt` check one artifact and return
a :class:`Verified` (payload and signer: an address or a DID) or raise :class:`ProofError`. Which signers to
trust is the caller's policy (:func:`authorized`). Keys of ``did:web`` kids are fetched by the caller and
passed in as ``keys``; ``did:key`` kids decode here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from paywire.errors import WireError
from paywire.evm.crypto import (
    address_of_key,
    keccak256,
    recover_address,
    recover_pubkey,
    sign_digest,
    to_checksum,
)
from paywire.identity.did import DidError, did_key, parse_did_key

OFFER_RECEIPT: Final = "offer-receipt"
"""The extension's key in ``PaymentRequired.extensions`` and ``SettleResponse.extensions``."""
VERSION: Final = 1
MAX_ARTIFACT: Final = 8192
"""Longest JWS string or payload text accepted (bytes)."""

_DOMAIN_TYPE = keccak256(b"EIP712Domain(string name,string version,uint256 chainId)")
_OFFER_TYPE = keccak256(b"Offer(uint256 version,string resourceUrl,string scheme,string network,string asset,"
                        b"string payTo,string amount,uint256 validUntil)")
_RECEIPT_TYPE = keccak256(b"Receipt(uint256 version,string network,string resourceUrl,string payer,"
                          b"uint256 issuedAt,string transaction)")
OFFER_FIELDS: Final = ("version", "resourceUrl", "scheme", "network", "asset", "payTo", "amount", "validUntil")
RECEIPT_FIELDS: Final = ("version", "network", "resourceUrl", "payer", "issuedAt", "transaction")
_STRING_FIELDS = frozenset({"resourceUrl", "scheme", "network", "asset", "payTo", "amount", "payer", "transaction"})

Format = Literal["eip712", "jws"]

OFFER_SCHEMA: Final[Mapping[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "properties": {"offers": {"type": "array", "items": {
        "type": "object", "properties": {
            "format": {"type": "string"}, "acceptIndex": {"type": "integer"},
            "payload": {"type": "object", "properties": {
                "version": {"type": "integer"}, "resourceUrl": {"type": "string"}, "scheme": {"type": "string"},
                "network": {"type": "string"}, "asset": {"type": "string"}, "payTo": {"type": "string"},
                "amount": {"type": "string"}, "validUntil": {"type": "integer"}},
                "required": ["version", "resourceUrl", "scheme", "network", "asset", "payTo", "amount"]},
            "signature": {"type": "string"}},
        "required": ["format", "signature"]}}},
    "required": ["offers"],
}
RECEIPT_SCHEMA: Final[Mapping[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "properties": {"receipt": {
        "type": "object", "properties": {
            "format": {"type": "string"},
            "payload": {"type": "object", "properties": {
                "version": {"type": "integer"}, "network": {"type": "string"}, "resourceUrl": {"type": "string"},
                "payer": {"type": "string"}, "issuedAt": {"type": "integer"}, "transaction": {"type": "string"}},
                "required": ["version", "network", "resourceUrl", "payer", "issuedAt"]},
            "signature": {"type": "string"}},
        "required": ["format", "signature"]}},
    "required": ["receipt"],
}


class ProofError(WireError):
    """A signed offer or receipt that is malformed or whose signature does not check out."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_offer_receipt", detail)


@dataclass(frozen=True, slots=True)
class Verified:
    """A checked artifact: its payload and who signed it (a checksummed address, or the ``kid``'s DID)."""

    format: str
    payload: Mapping[str, Any]
    signer: str


def _u256(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _h(text: str) -> bytes:
    return keccak256(text.encode())


_OFFER_DOMAIN = keccak256(_DOMAIN_TYPE + _h("x402 offer") + _h("1") + _u256(1))
_RECEIPT_DOMAIN = keccak256(_DOMAIN_TYPE + _h("x402 receipt") + _h("1") + _u256(1))


def _uint(payload: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise ProofError(f"{key} must be a non-negative integer")
    return value


def _str(payload: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise ProofError(f"{key} must be a string")
    return value


def offer_digest(payload: Mapping[str, Any]) -> bytes:
    """The EIP-712 hash of an offer payload (a missing ``validUntil`` is 0)."""
    body = (_OFFER_TYPE + _u256(_uint(payload, "version")) + _h(_str(payload, "resourceUrl"))
            + _h(_str(payload, "scheme")) + _h(_str(payload, "network")) + _h(_str(payload, "asset"))
            + _h(_str(payload, "payTo")) + _h(_str(payload, "amount")) + _u256(_uint(payload, "validUntil", 0)))
    return keccak256(b"\x19\x01" + _OFFER_DOMAIN + keccak256(body))


def receipt_digest(payload: Mapping[str, Any]) -> bytes:
    """The EIP-712 hash of a receipt payload (a missing ``transaction`` is ``""``)."""
    body = (_RECEIPT_TYPE + _u256(_uint(payload, "version")) + _h(_str(payload, "network"))
            + _h(_str(payload, "resourceUrl")) + _h(_str(payload, "payer")) + _u256(_uint(payload, "issuedAt"))
            + _h(_str(payload, "transaction", "")))
    return keccak256(b"\x19\x01" + _RECEIPT_DOMAIN + keccak256(body))


def offer_payload(resource_url: str, scheme: str, network: str, asset: str, pay_to: str, amount: int | str,
                  valid_until: int) -> dict[str, Any]:
    """The spec's offer payload (``version`` 1) for one ``accepts[]`` entry."""
    return {"version": VERSION, "resourceUrl": resource_url, "scheme": scheme, "network": network, "asset": asset,
            "payTo": pay_to, "amount": str(amount), "validUntil": int(valid_until)}


def receipt_payload(resource_url: str, payer: str, network: str, issued_at: int,
                    transaction: str | None = None, *, for_jws: bool = False) -> dict[str, Any]:
    """The spec's receipt payload (``version`` 1); ``transaction`` only when given (EIP-712: ``""``)."""
    out: dict[str, Any] = {"version": VERSION, "network": network, "resourceUrl": resource_url, "payer": payer,
                           "issuedAt": int(issued_at)}
    if transaction or not for_jws:
        out["transaction"] = transaction or ""
    return out


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    if not all(c.isalnum() or c in "-_" for c in text):
        raise ProofError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ProofError("not base64url") from None


class ArtifactSigner:
    """The seller's identity key that signs offers and receipts.

    ``ArtifactSigner(key)``: EIP-712 with a 32-byte secp256k1 key (its address is the signer; use the ``payTo``
    key for the spec's simplest trust rule). ``ArtifactSigner(key, format="jws")``: JWS ``ES256K`` with the same
    kind of key, or ``key_type="Ed25519"`` for ``EdDSA``; ``kid`` defaults to the key's ``did:key`` URL.
    """

    def __init__(self, private_key: bytes, *, format: Format = "eip712", key_type: str = "secp256k1",
                 kid: str | None = None) -> None:
        if len(private_key) != 32:
            raise ValueError("a signing key is 32 bytes")
        if format not in ("eip712", "jws") or key_type not in ("secp256k1", "Ed25519"):
            raise ValueError("format is 'eip712' or 'jws'; key_type 'secp256k1' or 'Ed25519'")
        if format == "eip712" and key_type != "secp256k1":
            raise ValueError("EIP-712 artifacts are signed with a secp256k1 key")
        self.format: Format = format
        self.key_type = key_type
        self._key = private_key
        self._ed: Any = None
        if key_type == "Ed25519":
            from paywire.identity.agent import _ed25519

            self._ed = _ed25519().Ed25519PrivateKey.from_private_bytes(private_key)
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            public = self._ed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        else:
            import coincurve

            public = coincurve.PrivateKey(private_key).public_key.format(compressed=True)
        self.did = did_key(key_type, public)
        self.address = to_checksum(address_of_key(private_key)) if key_type == "secp256k1" else None
        self.kid = kid or f"{self.did}#{self.did.removeprefix('did:key:')}"
        self.alg = "EdDSA" if key_type == "Ed25519" else "ES256K"
        self._header = _b64url(json.dumps({"alg": self.alg, "kid": self.kid}, separators=(",", ":")).encode())

    @property
    def signer_id(self) -> str:
        """Who verifiers will see as the signer: the address (EIP-712) or the ``kid``'s DID (JWS)."""
        if self.format == "eip712":
            assert self.address is not None
            return self.address
        return self.kid.split("#", 1)[0]

    def _jws(self, payload: Mapping[str, Any]) -> str:
        from paywire.mpp.jcs import canonicalize  # RFC 8785 (kept in mpp, which signs with it too)

        body = _b64url(canonicalize(payload))
        data = f"{self._header}.{body}".encode()
        if self._ed is not None:
            sig = self._ed.sign(data)
        else:
            sig = sign_digest(self._key, hashlib.sha256(data).digest())[:64]
        return f"{self._header}.{body}.{_b64url(sig)}"

    def sign_offer(self, payload: Mapping[str, Any], accept_index: int | None = None) -> dict[str, Any]:
        """One entry of ``info.offers``."""
        out: dict[str, Any] = {"format": self.format}
        if accept_index is not None:
            out["acceptIndex"] = accept_index
        if self.format == "jws":
            out["signature"] = self._jws(payload)
        else:
            out["payload"] = dict(payload)
            out["signature"] = "0x" + sign_digest(self._key, offer_digest(payload)).hex()
        return out

    def sign_receipt(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``info.receipt``."""
        if self.format == "jws":
            return {"format": "jws", "signature": self._jws(payload)}
        return {"format": "eip712", "payload": dict(payload),
                "signature": "0x" + sign_digest(self._key, receipt_digest(payload)).hex()}

    def offers_extension(self, resource_url: str, accepts: Sequence[Any], now: float,
                         validity: float | None = None) -> dict[str, Any]:
        """``extensions["offer-receipt"]`` of a 402: one signed offer per ``accepts`` entry (objects with
        ``scheme``, ``network``, ``asset``, ``pay_to``, ``amount``, ``max_timeout_seconds``)."""
        offers = []
        for i, a in enumerate(accepts):
            ttl = validity if validity is not None else getattr(a, "max_timeout_seconds", 300) or 300
            offers.append(self.sign_offer(offer_payload(resource_url, a.scheme, a.network, a.asset, a.pay_to,
                                                        a.amount, int(now + ttl)), i))
        return {"info": {"offers": offers}, "schema": dict(OFFER_SCHEMA)}

    def receipt_extension(self, resource_url: str, payer: str, network: str, now: float,
                          transaction: str | None = None) -> dict[str, Any]:
        """``extensions["offer-receipt"]`` of a ``PAYMENT-RESPONSE``."""
        payload = receipt_payload(resource_url, payer, network, int(now), transaction, for_jws=self.format == "jws")
        return {"info": {"receipt": self.sign_receipt(payload)}, "schema": dict(RECEIPT_SCHEMA)}


# ------------------------------------------------------------------------------------------------ verification


def _check_fields(payload: Any, fields: Sequence[str], optional: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise ProofError("the payload is not an object")
    for f in fields:
        if f not in payload and f not in optional:
            raise ProofError(f"the payload lacks {f}")
    for f, v in payload.items():
        if f in _STRING_FIELDS and not isinstance(v, str):
            raise ProofError(f"{f} must be a string")
    if payload.get("version") != VERSION or isinstance(payload.get("version"), bool):
        raise ProofError(f"unsupported payload version {str(payload.get('version'))[:10]!r}")
    return payload


def _jws_parts(jws: Any) -> tuple[dict[str, Any], Mapping[str, Any], bytes, bytes]:
    if not isinstance(jws, str) or len(jws) > MAX_ARTIFACT or jws.count(".") != 2:
        raise ProofError("not a JWS compact string")
    h, p, s = jws.split(".")
    try:
        header, payload = json.loads(_unb64url(h)), json.loads(_unb64url(p))
    except (ValueError, UnicodeDecodeError):
        raise ProofError("the JWS header or payload is not JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ProofError("the JWS header or payload is not an object")
    return header, payload, f"{h}.{p}".encode(), _unb64url(s)


def _jws_key(kid: str, keys: Mapping[str, tuple[str, bytes]] | None) -> tuple[str, bytes]:
    """(key type, public key) that ``kid`` names: from ``keys`` (resolved by the caller, e.g. ``did:web``) or a
    ``did:key``."""
    given = (keys or {}).get(kid) or (keys or {}).get(kid.split("#", 1)[0])
    if given is not None:
        return given
    did = kid.split("#", 1)[0]
    if did.startswith("did:key:"):
        try:
            k = parse_did_key(did)
        except DidError as exc:
            raise ProofError(f"kid: {exc.detail}") from None
        return k.key_type, k.public_key
    raise ProofError(f"cannot resolve kid {kid[:80]!r} (did:key decodes here; resolve did:web first)")


def verify_jws(jws: Any, keys: Mapping[str, tuple[str, bytes]] | None = None) -> Verified:
    """Check a JWS artifact; the signer is the ``kid``'s DID."""
    header, payload, data, sig = _jws_parts(jws)
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(kid, str) or not kid.startswith("did:") or len(kid) > 1024:
        raise ProofError("the JWS header needs a kid that is a DID URL")
    key_type, public = _jws_key(kid, keys)
    if alg == "EdDSA" and key_type == "Ed25519":
        from paywire.identity.agent import _ed25519

        try:
            _ed25519().Ed25519PublicKey.from_public_bytes(public).verify(sig, data)
        except Exception:
            raise ProofError("the JWS signature does not verify") from None
    elif alg == "ES256K" and key_type == "secp256k1":
        if len(sig) != 64 or not _es256k_ok(public, hashlib.sha256(data).digest(), sig):
            raise ProofError("the JWS signature does not verify")
    else:
        raise ProofError(f"alg {str(alg)[:20]!r} does not fit the kid's {key_type} key")
    from paywire.mpp.jcs import JcsError, canonicalize

    try:
        canonical = canonicalize(payload)
    except JcsError:
        raise ProofError("the JWS payload has no canonical form") from None
    if data.split(b".")[1] != _b64url(canonical).encode():
        raise ProofError("the JWS payload is not in JCS canonical form")
    return Verified("jws", payload, kid.split("#", 1)[0])


def _es256k_ok(public: bytes, digest: bytes, sig: bytes) -> bool:
    """An ``r || s`` (low-s) secp256k1 signature over ``digest`` by the compressed key ``public``."""
    import coincurve

    want = coincurve.PublicKey(public).format(compressed=False)[1:]
    return any(recover_pubkey(digest, sig + bytes([v])) == want for v in (0, 1))


def _eip712(artifact: Mapping[str, Any], digest_of: Any, fields: Sequence[str], optional: Sequence[str]) -> Verified:
    payload = _check_fields(artifact.get("payload"), fields, optional)
    sig = artifact.get("signature")
    try:
        raw = bytes.fromhex(sig[2:]) if isinstance(sig, str) and sig.startswith("0x") else b""
    except ValueError:
        raw = b""
    if len(raw) != 65:
        raise ProofError("an eip712 signature is 0x and 65 bytes")
    signer = recover_address(digest_of(payload), raw)
    if signer is None:
        raise ProofError("the EIP-712 signature does not recover")
    return Verified("eip712", payload, to_checksum(signer))


def _verify(artifact: Any, digest_of: Any, fields: Sequence[str], optional: Sequence[str],
            keys: Mapping[str, tuple[str, bytes]] | None) -> Verified:
    if not isinstance(artifact, Mapping):
        raise ProofError("the artifact is not an object")
    fmt = artifact.get("format")
    if fmt == "eip712":
        return _eip712(artifact, digest_of, fields, optional)
    if fmt == "jws":
        v = verify_jws(artifact.get("signature"), keys)
        _check_fields(v.payload, fields, optional)
        return v
    raise ProofError(f"unknown format {str(fmt)[:20]!r}")


def verify_offer(offer: Any, keys: Mapping[str, tuple[str, bytes]] | None = None) -> Verified:
    """Check one signed offer (either format)."""
    return _verify(offer, offer_digest, OFFER_FIELDS, ("validUntil",), keys)


def verify_receipt(receipt: Any, keys: Mapping[str, tuple[str, bytes]] | None = None) -> Verified:
    """Check one signed receipt (either format)."""
    return _verify(receipt, receipt_digest, RECEIPT_FIELDS, ("transaction",), keys)


def offers_of(extensions: Mapping[str, Any] | None) -> list[Any]:
    """The signed offers in a 402's extensions (unchecked)."""
    ext = (extensions or {}).get(OFFER_RECEIPT)
    info = ext.get("info") if isinstance(ext, Mapping) else None
    offers = info.get("offers") if isinstance(info, Mapping) else None
    return list(offers[:64]) if isinstance(offers, list) else []


def web_kids(artifacts: Sequence[Any]) -> set[str]:
    """The ``did:web`` DIDs named by the ``kid`` of JWS artifacts (to resolve before verifying them)."""
    out: set[str] = set()
    for a in artifacts:
        if isinstance(a, Mapping) and a.get("format") == "jws":
            try:
                header = _jws_parts(a.get("signature"))[0]
            except ProofError:
                continue
            kid = header.get("kid")
            if isinstance(kid, str) and kid.startswith("did:web:"):
                out.add(kid.split("#", 1)[0])
    return out


def receipt_of(extensions: Mapping[str, Any] | None) -> Any:
    """The signed receipt in a settlement response's extensions (unchecked), or None."""
    ext = (extensions or {}).get(OFFER_RECEIPT)
    info = ext.get("info") if isinstance(ext, Mapping) else None
    return info.get("receipt") if isinstance(info, Mapping) else None


def offer_matches(payload: Mapping[str, Any], scheme: str, network: str, asset: str, pay_to: str,
                  amount: int | str) -> bool:
    """Whether an offer's signed terms are those of one ``accepts`` entry (addresses case-insensitively)."""
    return (payload.get("scheme") == scheme and payload.get("network") == network
            and str(payload.get("asset", "")).lower() == asset.lower()
            and str(payload.get("payTo", "")).lower() == pay_to.lower() and payload.get("amount") == str(amount))


def authorized(signer: str, trusted: Collection[str] | None, pay_to: str | None = None) -> bool:
    """Whether ``signer`` may speak for the seller: one of ``trusted`` (addresses or DIDs; case-insensitive);
    without a list, the spec's simplest rule — the EIP-712 signer is the offer's ``payTo``."""
    low = signer.lower()
    if trusted is not None:
        return any(t.lower() == low for t in trusted)
    return pay_to is not None and pay_to.lower() == low


# ------------------------------------------------------------------------------------------------ buyer


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased; ``""`` for one that does not parse."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def signed_offers(extensions: Mapping[str, Any] | None, accepts: Sequence[Any], request_url: str, now: float,
                  trusted: Collection[str] | None,
                  keys: Mapping[str, tuple[str, bytes]] | None = None) -> dict[int, tuple[Any, Verified]]:
    """The ``accepts`` entries (by index) that carry a valid signed offer: the signature checks, the signed terms
    are the entry's, ``resourceUrl`` is on the origin the 402 came from, ``validUntil`` (when set) has not passed,
    and, given a ``trusted`` list, the signer is on it (without one any signer is kept, and named: whether it
    speaks for the seller is for whoever reads the evidence to judge, e.g. :func:`authorized`). ``accepts``: objects with ``scheme``, ``network``, ``asset``,
    ``pay_to``, ``amount``."""
    out: dict[int, tuple[Any, Verified]] = {}
    origin = _origin(request_url)
    for artifact in offers_of(extensions):
        try:
            v = verify_offer(artifact, keys)
        except ProofError:
            continue
        p = v.payload
        until = p.get("validUntil") or 0
        if (not isinstance(p.get("resourceUrl"), str) or not origin or _origin(p["resourceUrl"]) != origin
                or (isinstance(until, int) and until and until < now)
                or (trusted is not None and not authorized(v.signer, trusted))):
            continue
        for i, a in enumerate(accepts):
            if i not in out and offer_matches(p, a.scheme, a.network, a.asset, a.pay_to, a.amount):
                out[i] = (artifact, v)
    return out


def check_receipt(receipt: Any, *, payer: str, network: str, request_url: str, signer: str | None,
                  trusted: Sequence[str] | None,
                  keys: Mapping[str, tuple[str, bytes]] | None = None) -> Verified:
    """A receipt for our payment: valid signature, our ``payer`` and ``network``, the origin we paid, signed by
    the offer's signer (or a trusted one); ``ProofError`` otherwise."""
    v = verify_receipt(receipt, keys)
    p = v.payload
    if str(p.get("payer", "")).lower() != payer.lower():
        raise ProofError("the receipt names another payer")
    if p.get("network") != network:
        raise ProofError("the receipt names another network")
    if not _origin(request_url) or _origin(str(p.get("resourceUrl", ""))) != _origin(request_url):
        raise ProofError("the receipt is for another origin")
    if signer is not None and v.signer.lower() != signer.lower() and not authorized(v.signer, trusted):
        raise ProofError("the receipt is not signed by the seller that signed the offer")
    if signer is None and trusted is not None and not authorized(v.signer, trusted):
        raise ProofError("the receipt is not signed by the seller that signed the offer")
    return v


__all__ = [
    "OFFER_RECEIPT",
    "OFFER_SCHEMA",
    "RECEIPT_SCHEMA",
    "ArtifactSigner",
    "ProofError",
    "Verified",
    "authorized",
    "check_receipt",
    "offer_digest",
    "offer_matches",
    "offer_payload",
    "offers_of",
    "receipt_digest",
    "receipt_of",
    "receipt_payload",
    "signed_offers",
    "verify_jws",
    "verify_offer",
    "verify_receipt",
    "web_kids",
]
