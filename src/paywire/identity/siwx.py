"""The x402 ``sign-in-with-x`` extension (CAIP-122) for EVM accounts (EIP-4361: EOA, EIP-1271, ERC-6492) and
Solana accounts (SIWS, Ed25519: :mod:`paywire.identity.siws`), sans-I/O.

Seller: :class:`SiwxIssuer` writes the extension into a 402 (``extensions["sign-in-with-x"]``) with a nonce
that is a MAC over the challenge it was issued with, so checking that a nonce is ours needs no stored state; its
:meth:`~SiwxIssuer.check` reads a ``SIGN-IN-WITH-X`` header and returns a :class:`SiwxProof` or a
:class:`SiwxFailure` (code + message). Single use of a nonce is the store's job
(:mod:`paywire.store.identity`): only a valid sign-in writes a row, and rows expire with the challenge.

Buyer: :func:`answer_challenge` turns the extension of a 402 and the wallet's address into the signed-in
payload's fields and the message to sign; :func:`encode_proof` makes the header.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from paywire.evm.crypto import recover_address, to_checksum
from paywire.identity.did import DidError, Identity, b58decode, b58encode
from paywire.identity.siwe import (
    _ADDRESS,
    _NONCE,
    HEADER_SUFFIX,
    SiweError,
    SiweMessage,
    canonical_time,
    format_time,
    parse_time,
    personal_sign_digest,
)
from paywire.identity.siws import SiwsMessage, siws_of, solana_address, solana_reference, verify_ed25519

SIGN_IN_WITH_X: Final = "sign-in-with-x"
"""The extension's key in ``PaymentRequired.extensions``."""
HEADER: Final = "SIGN-IN-WITH-X"
MAX_HEADER: Final = 8192
SCHEMA: Final[Mapping[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "domain": {"type": "string"}, "address": {"type": "string"}, "statement": {"type": "string"},
        "uri": {"type": "string", "format": "uri"}, "version": {"type": "string"},
        "chainId": {"type": "string"}, "type": {"type": "string"}, "nonce": {"type": "string"},
        "issuedAt": {"type": "string", "format": "date-time"},
        "expirationTime": {"type": "string", "format": "date-time"},
        "notBefore": {"type": "string", "format": "date-time"}, "requestId": {"type": "string"},
        "resources": {"type": "array", "items": {"type": "string", "format": "uri"}},
        "signature": {"type": "string"},
    },
    "required": ["domain", "address", "uri", "version", "chainId", "type", "nonce", "issuedAt", "signature"],
}


@dataclass(frozen=True, slots=True)
class SiwxProof:
    """A sign-in that checked out: who, on which chain, and the nonce to spend once (until ``expires_at``)."""

    address: str
    network: str
    nonce: str
    expires_at: float

    @property
    def identity(self) -> Identity:
        """Its ``did:pkh`` (the address is already checksummed: no second EIP-55 pass)."""
        return Identity(f"did:pkh:{self.network}:{self.address}", ("siwx",), (self.address,))


@dataclass(frozen=True, slots=True)
class SiwxContractCheck:
    """Everything checked but the signature, which is not the address's own (EOA): it may be a contract wallet's
    (EIP-1271), or an undeployed one's (ERC-6492: the signature ends with the magic suffix). Whoever can call the
    chain asks ``address.isValidSignature(digest, signature)`` (for ERC-6492 through the validator of
    :mod:`paywire.identity.erc6492`) and, if it answers the magic value, takes :attr:`proof`; else it is
    :data:`NOT_THE_ADDRESS`."""

    proof: SiwxProof
    digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SiwxFailure:
    """Why a sign-in was refused: a stable ``code`` (``invalid_siwx_*``) and a message for humans."""

    code: str
    message: str


NOT_THE_ADDRESS = SiwxFailure("invalid_siwx_signature", "the signature is not the address's")


@functools.lru_cache(maxsize=1024)
def origin_of(url: str) -> tuple[str, str]:
    """(domain, origin) of a URL: ``("api.example.com", "https://api.example.com")`` (the few URLs a seller or
    a buyer sees over and over come from a bounded cache)."""
    parts = urlsplit(url)
    return parts.netloc, f"{parts.scheme}://{parts.netloc}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SiwxIssuer:
    """Issues and checks sign-in challenges for one seller.

    ``secret``: the key of the nonce MAC (the same on every replica; random per process when None).
    ``origin``: the seller's public origin (``https://api.example.com``); when set, challenges name it instead
    of the request's ``Host`` (set it behind a proxy, and whenever the Host header is not trustworthy).
    ``ttl``: how long a challenge may be answered (seconds). ``skew``: clock difference tolerated.
    """

    def __init__(self, secret: bytes | str | None = None, *, origin: str | None = None, ttl: float = 300.0,
                 statement: str = "Sign in to use what you paid for", skew: float = 30.0) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hashlib.sha256(b"paywire-siwx|" + (raw if raw else os.urandom(32))).digest()
        self.origin = origin.rstrip("/") if origin else None
        self.ttl, self.statement, self.skew = ttl, statement, skew
        self._places: dict[str, tuple[str, str]] = {}
        self._texts: dict[tuple[str, str], tuple[str, str, str] | None] = {}
        self._signers: dict[str, None] = {}  # addresses whose shape and EIP-55 checksum passed (bounded)

    def resource_url(self, url: str) -> str:
        """The URI a challenge names for a request to ``url`` (rebased on ``origin`` when configured)."""
        if self.origin is None:
            return url
        parts = urlsplit(url)
        return self.origin + parts.path + (f"?{parts.query}" if parts.query else "")

    def _where(self, url: str) -> tuple[str, str]:
        """(uri, domain) of the challenges for ``url``, worked out once per URL (bounded)."""
        hit = self._places.get(url)
        if hit is None:
            uri = self.resource_url(url)
            if len(self._places) >= 1024:
                self._places.clear()
            hit = self._places[url] = (uri, origin_of(uri)[0])
        return hit

    def _mac(self, rand: str, domain: str, uri: str, issued: str, expires: str) -> str:
        """Keyed BLAKE2b over the challenge (one call, no HMAC set-up per nonce)."""
        text = "\n".join((rand, domain, uri, issued, expires)).encode()
        return hashlib.blake2b(text, key=self._key, digest_size=8, person=b"paywire-siwx").hexdigest()

    def fresh(self, url: str, now: float) -> tuple[str, str, str]:
        """(nonce, issuedAt, expirationTime) of a new challenge for ``url``: the parts of a declaration that
        change from one 402 to the next."""
        uri, domain = self._where(url)
        issued, expires = format_time(now), format_time(now + self.ttl)
        rand = os.urandom(8).hex()
        return rand + self._mac(rand, domain, uri, issued, expires), issued, expires

    def declaration(self, url: str, networks: Sequence[str], now: float) -> dict[str, Any]:
        """The ``sign-in-with-x`` extension for a 402 answering a request to ``url`` (fresh nonce)."""
        uri, domain = self._where(url)
        nonce, issued, expires = self.fresh(url, now)
        info = {"domain": domain, "uri": uri, "version": "1", "nonce": nonce,
                "issuedAt": issued, "expirationTime": expires, "statement": self.statement, "resources": [uri]}
        chains = [{"chainId": n, "type": signature_type(n)} for n in dict.fromkeys(networks)
                  if n.startswith("eip155:") or solana_reference(n) is not None]
        return {"info": info, "supportedChains": chains, "schema": dict(SCHEMA)}

    def _usual(self, payload: Mapping[str, Any], uri: str,
               network: object) -> tuple[str, str, str, float, float, float | None] | None:
        """(text, address, nonce, issuedAt, expirationTime, None) of a sign-in shaped exactly as our 402 asked —
        our statement and resources, no notBefore or requestId, canonical times, a nonce of ours — with its
        text built from a template made once per URL and chain; None for anything else, which the general
        path (:func:`_message_of`) checks and explains. Both accept the same sign-ins and sign the same text."""
        template = self._template(uri, network)
        address, nonce = payload.get("address"), payload.get("nonce")
        issued_text, exp_text = payload.get("issuedAt"), payload.get("expirationTime")
        if (template is None or payload.get("version") != "1" or payload.get("statement") != self.statement
                or payload.get("resources") != [uri] or payload.get("notBefore") is not None
                or payload.get("requestId") is not None or not isinstance(address, str)
                or not isinstance(nonce, str) or len(nonce) != 32 or not nonce.isascii() or not nonce.isalnum()):
            return None
        issued, expires = canonical_time(issued_text), canonical_time(exp_text)
        if issued is None or expires is None or not self._known_signer(address):
            return None
        assert isinstance(issued_text, str) and isinstance(exp_text, str)  # canonical_time said so
        domain_line, middle, tail = template
        if not hmac.compare_digest(nonce[16:], self._mac(nonce[:16], domain_line[:-len(HEADER_SUFFIX) - 1], uri,
                                                         issued_text, exp_text)):
            return None  # the general path says invalid_siwx_nonce
        text = (f"{domain_line}{address}{middle}{nonce}\nIssued At: {issued_text}\nExpiration Time: {exp_text}"
                f"{tail}")
        return text, address, nonce, issued, expires, None

    def _template(self, uri: str, network: object) -> tuple[str, str, str] | None:
        """The fixed parts of the message our 402 for ``uri`` asks to sign on ``network``, once checked against
        the grammar (None when a part would not pass :meth:`SiweMessage.check`)."""
        key = (uri, str(network))
        if key in self._texts:
            return self._texts[key]
        domain = origin_of(uri)[0]
        try:
            if not isinstance(self.statement, str):
                raise TypeError("no statement")
            chain_id = _message_of({"domain": domain, "address": "0x" + "0" * 40, "uri": uri, "version": "1",
                                    "chainId": network, "nonce": "0" * 32, "issuedAt": "2026-01-01T00:00:00.000Z",
                                    "statement": self.statement, "resources": [uri]}).chain_id
            template: tuple[str, str, str] | None = (
                f"{domain}{HEADER_SUFFIX}\n", f"\n\n{self.statement}\n\nURI: {uri}\nVersion: 1\n"
                f"Chain ID: {chain_id}\nNonce: ", f"\nResources:\n- {uri}")
        except (SiweError, KeyError, TypeError, ValueError):
            template = None
        if len(self._texts) >= 1024:
            self._texts.clear()
        self._texts[key] = template
        return template

    def _known_signer(self, address: str) -> bool:
        """Whether ``address`` is 0x and 40 hex digits with a valid EIP-55 checksum when mixed-case (remembered)."""
        if address in self._signers:
            return True
        hexpart = address[2:]
        if _ADDRESS.fullmatch(address) is None or (hexpart not in (hexpart.lower(), hexpart.upper())
                                                   and to_checksum(address) != address):
            return False
        if len(self._signers) >= 4096:
            self._signers.clear()
        self._signers[address] = None
        return True

    def check(self, header: str, url: str, networks: Sequence[str],
              now: float) -> SiwxProof | SiwxFailure | SiwxContractCheck:
        """Read and verify a ``SIGN-IN-WITH-X`` header sent to ``url``: our nonce, our domain and URI, in time,
        on a chain we named, signed by the address (EOA ``personal_sign``) — or, when the signature is not the
        address's own, what to ask the chain (:class:`SiwxContractCheck`, EIP-1271)."""
        payload = decode_proof(header)
        if isinstance(payload, SiwxFailure):
            return payload
        uri, domain = self._where(url)
        if payload.get("domain") != domain:
            claimed = str(payload.get("domain"))[:80]
            return SiwxFailure("invalid_siwx_domain_mismatch", f"the sign-in is for {claimed!r}, this is {domain!r}")
        if payload.get("uri") != uri:
            return SiwxFailure("invalid_siwx_uri_mismatch", f"the sign-in names another resource than {uri}")
        network: Any = payload.get("chainId")
        solana = network in networks and network.startswith("solana:")  # in networks: a string
        if network not in networks or payload.get("type") != ("ed25519" if solana else "eip191"):
            return SiwxFailure("invalid_siwx_unsupported_chain",
                               f"chain {str(network)[:40]!r} is not one this route signs in with: {list(networks)}")
        if solana:
            return self._check_solana(payload, network, now)
        fast = self._usual(payload, uri, network)
        if fast is not None:
            text, address, nonce, issued, expires, not_before = fast
        else:
            try:
                msg = _message_of(payload, dates=False)  # the dates are converted right here
                issued = parse_time(msg.issued_at)
                expires = parse_time(msg.expiration_time) if msg.expiration_time else issued + self.ttl
                not_before = parse_time(msg.not_before) if msg.not_before else None
            except (SiweError, KeyError, TypeError, ValueError) as exc:
                return SiwxFailure("invalid_siwx_payload", f"not a sign-in message: {exc}")
            text, address, nonce = msg.text(), msg.address, msg.nonce
            if not self._our_nonce(msg):
                return SiwxFailure("invalid_siwx_nonce", "the nonce was not issued by this seller for this challenge")
        late = self._untimely(issued, expires, not_before, now)
        if late is not None:
            return late
        sig = payload.get("signature")
        try:
            raw = bytes.fromhex(sig[2:]) if isinstance(sig, str) and sig.startswith("0x") else None
        except ValueError:
            raw = None
        if raw is None or not 0 < len(raw) <= 4096:
            return SiwxFailure("invalid_siwx_malformed_signature", "the signature must be 0x-hex bytes")
        digest = personal_sign_digest(text)
        hexpart = address[2:]  # a mixed-case address passed its EIP-55 check
        address = address if hexpart not in (hexpart.lower(), hexpart.upper()) else to_checksum(address)
        proof = SiwxProof(address, str(network), nonce, min(expires, issued + self.ttl) + self.skew)
        signer = recover_address(digest, raw) if len(raw) == 65 else None
        if signer is not None and signer == bytes.fromhex(hexpart):
            return proof
        return SiwxContractCheck(proof, digest, raw)

    def _our_nonce(self, msg: SiweMessage | SiwsMessage) -> bool:
        """The message's nonce is one this seller issued for this domain, URI and time window."""
        nonce = msg.nonce
        return len(nonce) == 32 and hmac.compare_digest(
            nonce[16:], self._mac(nonce[:16], msg.domain, msg.uri, msg.issued_at, msg.expiration_time or ""))

    def _untimely(self, issued: float, expires: float, not_before: float | None, now: float) -> SiwxFailure | None:
        """Why a sign-in with these times may not be used ``now`` (None: it may)."""
        if issued > now + self.skew:
            return SiwxFailure("invalid_siwx_issued_at_in_future", "issuedAt is in the future")
        if now - issued > self.ttl + self.skew or now > expires:
            return SiwxFailure("invalid_siwx_expired", "the challenge expired: answer a fresh 402")
        if not_before is not None and now + self.skew < not_before:
            return SiwxFailure("invalid_siwx_not_yet_valid", "notBefore is in the future")
        return None

    def _check_solana(self, payload: Mapping[str, Any], network: str, now: float) -> SiwxProof | SiwxFailure:
        """The rest of :meth:`check` for a ``solana:`` sign-in (SIWS): the same nonce and time rules, then the
        Ed25519 signature (base58) of the SIWS text by the address's key."""
        try:
            msg = siws_of(payload)
            issued = parse_time(msg.issued_at)
            expires = parse_time(msg.expiration_time) if msg.expiration_time else issued + self.ttl
            not_before = parse_time(msg.not_before) if msg.not_before else None
        except (SiweError, KeyError, TypeError, ValueError) as exc:
            return SiwxFailure("invalid_siwx_payload", f"not a sign-in message: {exc}")
        if not self._our_nonce(msg):
            return SiwxFailure("invalid_siwx_nonce", "the nonce was not issued by this seller for this challenge")
        late = self._untimely(issued, expires, not_before, now)
        if late is not None:
            return late
        sig = payload.get("signature")
        try:
            raw = b58decode(sig) if isinstance(sig, str) and len(sig) <= 100 else b""
        except DidError:
            raw = b""
        if len(raw) != 64:
            return SiwxFailure("invalid_siwx_malformed_signature", "the signature must be 64 bytes in base58")
        key = solana_address(msg.address)
        if key is None or not verify_ed25519(key, raw, msg.text()):
            return NOT_THE_ADDRESS
        return SiwxProof(msg.address, network, msg.nonce, min(expires, issued + self.ttl) + self.skew)


def signature_type(network: str) -> str:
    """The ``type`` a sign-in on ``network`` carries: ``ed25519`` on ``solana:`` chains, else ``eip191``."""
    return "ed25519" if network.startswith("solana:") else "eip191"


class SplicedHeader:
    """Standard base64 of a JSON text in which a few fixed-length values change from one use to the next (the
    nonce and times of a sign-in 402): everything but the few bytes around them is encoded once, at build time.

    ``raw``: the text with stand-ins (``marks``, each once in it, as long as the values that replace them)."""

    __slots__ = ("_at", "_head", "_marks", "_middle", "_raw", "_tail")

    def __init__(self, raw: bytes, marks: Sequence[bytes]) -> None:
        starts = [raw.find(m) for m in marks]
        if any(s < 0 or raw.count(m) != 1 for s, m in zip(starts, marks, strict=True)):
            raise ValueError("each stand-in must occur once")
        a = min(starts) // 3 * 3  # base64 maps 3-byte groups to 4 characters: cut on group boundaries
        b = min(len(raw), -(-max(s + len(m) for s, m in zip(starts, marks, strict=True)) // 3) * 3)
        self._raw, self._marks = raw, tuple(marks)
        self._head, self._tail = base64.b64encode(raw[:a]).decode("ascii"), base64.b64encode(raw[b:]).decode("ascii")
        self._middle = raw[a:b]
        self._at = tuple((s - a, len(m)) for s, m in zip(starts, marks, strict=True))

    def render(self, values: Sequence[str]) -> str:
        """The header with ``values`` (ASCII, one per stand-in) in place of the stand-ins."""
        middle = bytearray(self._middle)
        for (at, n), value in zip(self._at, values, strict=True):
            data = value.encode()
            if len(data) != n:  # not the expected length (a year past 9999): encode it all
                raw = self._raw
                for mark, v in zip(self._marks, values, strict=True):
                    raw = raw.replace(mark, v.encode(), 1)
                return base64.b64encode(raw).decode("ascii")
            middle[at:at + n] = data
        return self._head + base64.b64encode(middle).decode("ascii") + self._tail


def decode_proof(header: str) -> dict[str, Any] | SiwxFailure:
    """The JSON object in a ``SIGN-IN-WITH-X`` header (standard or URL-safe base64)."""
    if not isinstance(header, str) or len(header) > MAX_HEADER:
        return SiwxFailure("invalid_siwx_header", f"the header must be at most {MAX_HEADER} characters")
    text = header.strip()
    try:
        if "-" in text or "_" in text:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        else:
            raw = binascii.a2b_base64(text if len(text) % 4 == 0 else text + "=" * (-len(text) % 4), strict_mode=True)
        # json.loads(bytes) picks UTF-8 when neither of the first two bytes is NUL and there is no BOM: an
        # object's "{" and a second byte that is not NUL say so at once (same text, same errors)
        value = _DECODE(raw.decode("utf-8", "surrogatepass")) if raw[:1] == b"{" and raw[1:2] not in (b"\0", b"") \
            else json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return SiwxFailure("invalid_siwx_header", "the header is not base64 of a JSON object")
    if not isinstance(value, dict):
        return SiwxFailure("invalid_siwx_header", "the header is not base64 of a JSON object")
    return value


def _opt_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _message_of(payload: Mapping[str, Any], *, dates: bool = True) -> SiweMessage:
    """The EIP-4361 message the payload's fields stand for (checked against the grammar)."""
    network = payload["chainId"]
    ns, _, ref = str(network).partition(":")
    if ns != "eip155" or not ref.isdigit():
        raise TypeError("chainId must be eip155:<number>")
    resources = payload.get("resources")
    if resources is not None and not (isinstance(resources, list) and all(isinstance(r, str) for r in resources)):
        raise TypeError("resources must be a list of strings")
    fields = {k: payload[k] for k in ("domain", "address", "uri", "version", "nonce", "issuedAt")}
    if not all(isinstance(v, str) for v in fields.values()):
        raise TypeError("domain, address, uri, version, nonce and issuedAt must be strings")
    return SiweMessage(fields["domain"], fields["address"], fields["uri"], fields["version"], int(ref),
                       fields["nonce"], fields["issuedAt"], _opt_str(payload, "statement"),
                       _opt_str(payload, "expirationTime"), _opt_str(payload, "notBefore"),
                       _opt_str(payload, "requestId"),
                       tuple(resources) if resources is not None else None).check(dates=dates)


# ------------------------------------------------------------------------------------------------ buyer


def choose_chain(extension: Mapping[str, Any], networks: Sequence[str] | None, kind: str = "eip191") -> str | None:
    """The first chain of the extension's ``supportedChains`` of signature type ``kind`` (``eip191``: an
    ``eip155`` chain, ``ed25519``: a ``solana`` one) the buyer may use (``networks``: the policy's allowed
    networks, None = any)."""
    chains = extension.get("supportedChains")
    if not isinstance(chains, list):
        return None
    prefix = "solana:" if kind == "ed25519" else "eip155:"
    for c in chains:
        if not isinstance(c, Mapping) or c.get("type") != kind:
            continue
        chain = c.get("chainId")
        if isinstance(chain, str) and chain.startswith(prefix) and (networks is None or chain in networks):
            return chain
    return None


def answer_challenge(extension: Mapping[str, Any], response_url: str, address: str,
                     network: str) -> tuple[dict[str, Any], str]:
    """(the payload without its signature, the message to sign) for answering ``extension`` — the
    ``sign-in-with-x`` entry of a 402 from ``response_url`` — as ``address`` on ``network``. Raises ``SiweError``
    when the challenge is not bound to the origin that sent it (a server may not ask for sign-ins elsewhere)."""
    info = extension.get("info")
    if not isinstance(info, Mapping):
        raise SiweError("the sign-in-with-x extension has no info")
    domain, origin = origin_of(response_url)
    uri = info.get("uri")
    if info.get("domain") != domain or not isinstance(uri, str) or origin_of(uri)[1] != origin:
        raise SiweError(f"the sign-in challenge is not for {origin}")
    payload: dict[str, Any] = {k: info[k] for k in ("domain", "uri", "version", "nonce", "issuedAt", "statement",
                                                    "expirationTime", "notBefore", "requestId", "resources")
                               if info.get(k) is not None}
    if network.startswith("solana:"):  # SIWS: a base58 address, an Ed25519 signature of the text itself
        payload.update(address=address, chainId=network, type="ed25519")
        return payload, siws_of(payload).text()
    payload.update(address=to_checksum(address), chainId=network, type="eip191")
    return payload, _answer_text(payload)


_ANSWERS: dict[tuple[Any, ...], tuple[str, str, str] | None] = {}  # see _answer_text (bounded)


def _answer_text(payload: Mapping[str, Any]) -> str:
    """``_message_of(payload).text()``, with the fields a seller repeats from one 402 to the next (domain, URI,
    statement, chain, request id, resources) checked against the grammar once: only the address, nonce and
    times are checked per answer. Anything unusual goes the general way, which raises what is wrong."""
    resources = payload.get("resources")
    key = (payload.get("domain"), payload.get("uri"), payload.get("version"), payload.get("statement"),
           payload.get("chainId"), payload.get("requestId"),
           tuple(resources) if isinstance(resources, list) else resources)
    try:
        template = _ANSWERS[key]
    except KeyError:
        template = _answer_template(payload, key)
    except TypeError:  # unhashable: not a sign-in the grammar takes (the general path says why)
        template = None
    address, nonce = payload["address"], payload.get("nonce")
    issued, expires, not_before = payload.get("issuedAt"), payload.get("expirationTime"), payload.get("notBefore")
    if (template is None or not isinstance(address, str) or _ADDRESS.fullmatch(address) is None
            or not isinstance(nonce, str) or _NONCE.fullmatch(nonce) is None or canonical_time(issued) is None
            or not (expires is None or canonical_time(expires) is not None)
            or not (not_before is None or canonical_time(not_before) is not None)
            or (to_checksum(address) != address and address[2:] not in (address[2:].lower(), address[2:].upper()))):
        return _message_of(payload).text()
    head, middle, tail = template
    return (f"{head}{address}{middle}{nonce}\nIssued At: {issued}"
            + (f"\nExpiration Time: {expires}" if expires else "") + (f"\nNot Before: {not_before}" if not_before
                                                                      else "") + tail)


def _answer_template(payload: Mapping[str, Any], key: tuple[Any, ...]) -> tuple[str, str, str] | None:
    """The fixed parts of the text of answers with these repeated fields, when they pass the grammar."""
    try:
        msg = _message_of({**payload, "address": "0x" + "0" * 40, "nonce": "0" * 32,
                           "issuedAt": "2026-01-01T00:00:00.000Z", "expirationTime": None, "notBefore": None})
    except (SiweError, KeyError, TypeError, ValueError):
        template = None
    else:
        text = msg.text()
        at, nonce_at = text.index("\n" + msg.address) + 1, text.index("\nNonce: ") + 8
        issued_end = text.index("\nIssued At: ") + 12 + len(msg.issued_at)
        template = (text[:at], text[at + 42:nonce_at], text[issued_end:])
    if len(_ANSWERS) >= 256:
        _ANSWERS.clear()
    _ANSWERS[key] = template
    return template


def encode_proof(payload: Mapping[str, Any], signature: bytes) -> str:
    """The ``SIGN-IN-WITH-X`` header value: base64 of the payload with its signature (``0x`` hex; base58 for an
    ``ed25519`` sign-in)."""
    if payload.get("type") == "ed25519":
        body = {**payload, "signatureScheme": "siws", "signature": b58encode(signature)}
    else:
        body = {**payload, "signatureScheme": "eip191", "signature": "0x" + signature.hex()}
    return base64.b64encode(_COMPACT.encode(body).encode()).decode()


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps would build one per call
_DECODE: Final = json.JSONDecoder().decode  # json.loads(text) without its keyword checks


__all__ = ["HEADER", "NOT_THE_ADDRESS", "SCHEMA", "SIGN_IN_WITH_X", "SiwxContractCheck", "SiwxFailure", "SiwxIssuer", "SiwxProof", "SplicedHeader", "answer_challenge",
           "choose_chain", "decode_proof", "encode_proof", "origin_of", "personal_sign_digest", "signature_type"]
