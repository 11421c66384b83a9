"""``did:web``: a DID whose document is served by a web domain (W3C did:web method).

:func:`document_url` maps the DID to its document's URL (``did:web:example.com`` →
``https://example.com/.well-known/did.json``; ``did:web:example.com:user:alice`` →
``https://example.com/user/alice/did.json``; a port is written ``%3A``). :func:`parse_document` reads a
document strictly and returns its verification keys (``{key id: (key type, public key)}``, Ed25519 and
secp256k1, as ``publicKeyJwk`` or ``publicKeyMultibase``): the document must name this DID as its ``id``, every
key's ``id`` must be this DID's (``#fragment``), its ``controller`` this DID, and a key given both ways must be
the same key. Both are sans-I/O.

:class:`DidWebResolver` fetches documents (HTTPS only; the fetch of :mod:`paywire.identity.fetch`: public
addresses, no redirects, size and time limits) and caches them (failures briefly). The method requires HTTPS;
``dev=True`` also allows plain http to a loopback/private host, for local development only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from paywire.identity.did import ED25519_PUB, SECP256K1_PUB, DidError, b58decode

MAX_DOCUMENT: Final = 64 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9._\-%]+")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(%3[Aa][0-9]{1,5})?")
KeyTable = dict[str, tuple[str, bytes]]


def document_url(did: str, *, scheme: str = "https") -> str:
    """The URL of a ``did:web`` document; ``DidError`` for anything that is not one."""
    if not isinstance(did, str) or len(did) > 512 or not did.startswith("did:web:"):
        raise DidError(f"not a did:web: {str(did)[:80]!r}")
    host, *path = did[len("did:web:"):].split("#", 1)[0].split(":")
    if _HOST.fullmatch(host) is None or not all(_SEGMENT.fullmatch(p) for p in path):
        raise DidError(f"did:web: bad domain or path in {did[:80]!r}")
    if any(unquote(p) in (".", "..") or "/" in unquote(p) for p in path):
        raise DidError("did:web: path segments may not be '.', '..' or contain '/'")
    where = "/".join(unquote(p) for p in path) + "/did.json" if path else ".well-known/did.json"
    return f"{scheme}://{unquote(host)}/{where}"


def _b64url(text: Any) -> bytes:
    if not isinstance(text, str) or not all(c.isalnum() or c in "-_" for c in text):
        raise DidError("a JWK coordinate is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DidError("a JWK coordinate is not base64url") from None


def _from_jwk(jwk: Any) -> tuple[str, bytes]:
    if not isinstance(jwk, Mapping) or "d" in jwk:
        raise DidError("publicKeyJwk must be a public JWK object")
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        x = _b64url(jwk.get("x"))
        if len(x) != 32:
            raise DidError("an Ed25519 JWK's x is 32 bytes")
        return "Ed25519", x
    if jwk.get("kty") == "EC" and jwk.get("crv") == "secp256k1":
        x, y = _b64url(jwk.get("x")), _b64url(jwk.get("y"))
        if len(x) != 32 or len(y) != 32:
            raise DidError("a secp256k1 JWK's x and y are 32 bytes each")
        import coincurve

        try:
            return "secp256k1", coincurve.PublicKey(b"\x04" + x + y).format(compressed=True)
        except ValueError:
            raise DidError("the secp256k1 JWK is not a point on the curve") from None
    raise DidError(f"unsupported JWK {str(jwk.get('kty'))[:10]}/{str(jwk.get('crv'))[:20]}")


def _from_multibase(text: Any) -> tuple[str, bytes]:
    if not isinstance(text, str) or not text.startswith("z") or len(text) > 200:
        raise DidError("publicKeyMultibase must be base58btc ('z…')")
    raw = b58decode(text[1:])
    if raw[:2] == bytes([ED25519_PUB, 0x01]) and len(raw) == 34:
        return "Ed25519", raw[2:]
    if raw[:2] == bytes([SECP256K1_PUB, 0x01]) and len(raw) == 35:
        import coincurve

        try:
            coincurve.PublicKey(raw[2:])
        except ValueError:
            raise DidError("the secp256k1 key is not a point on the curve") from None
        return "secp256k1", raw[2:]
    raise DidError("publicKeyMultibase: only Ed25519 and secp256k1 keys of the right length")


def parse_document(did: str, body: bytes) -> KeyTable:
    """The verification keys of ``did``'s document ``body`` (see the module docs); ``DidError`` otherwise."""
    if len(body) > MAX_DOCUMENT:
        raise DidError("the DID document is too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise DidError("the DID document is not JSON") from None
    if not isinstance(doc, dict):
        raise DidError("the DID document is not an object")
    if doc.get("id") != did:
        raise DidError(f"the document is for {str(doc.get('id'))[:80]!r}, not {did[:80]!r}")
    methods = doc.get("verificationMethod", [])
    if not isinstance(methods, list) or len(methods) > 32:
        raise DidError("verificationMethod must be a list (at most 32)")
    keys: KeyTable = {}
    for m in methods:
        if not isinstance(m, Mapping) or not isinstance(m.get("id"), str):
            raise DidError("a verification method has no id")
        kid = did + m["id"] if m["id"].startswith("#") else m["id"]
        if not kid.startswith(did + "#"):
            raise DidError(f"verification method {kid[:80]!r} is not this DID's")
        if m.get("controller", did) != did:
            raise DidError(f"verification method {kid[:80]!r} has another controller")
        jwk, multibase = m.get("publicKeyJwk"), m.get("publicKeyMultibase")
        if jwk is None and multibase is None:
            raise DidError(f"verification method {kid[:80]!r} has no publicKeyJwk or publicKeyMultibase")
        found = [_from_jwk(jwk)] if jwk is not None else []
        found += [_from_multibase(multibase)] if multibase is not None else []
        if len(found) == 2 and found[0] != found[1]:
            raise DidError(f"verification method {kid[:80]!r}: its JWK and multibase keys do not match")
        if kid in keys:
            raise DidError(f"verification method {kid[:80]!r} is listed twice")
        keys[kid] = found[0]
    if not keys:
        raise DidError("the DID document has no verification key")
    return keys


@dataclass(slots=True)
class DidWebResolver:
    """``did:web`` documents fetched (guarded) and cached: ``await resolver.keys(did)``."""

    dev: bool = False
    ttl: float = 300.0
    fail_ttl: float = 30.0
    timeout: float = 3.0
    max_entries: int = 1024
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, KeyTable | DidError]] = field(default_factory=dict, repr=False)

    async def keys(self, did: str) -> KeyTable:
        """The document's verification keys; ``DidError`` (cached for ``fail_ttl``) when it cannot be used."""
        did = did.split("#", 1)[0]
        now = self.clock()
        hit = self._cache.get(did)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], DidError):
                raise hit[1]
            return hit[1]
        try:
            keys = await self._fetch(did)
        except DidError as exc:
            self._remember(did, now + self.fail_ttl, exc)
            raise
        self._remember(did, now + self.ttl, keys)
        return keys

    def _remember(self, did: str, until: float, value: KeyTable | DidError) -> None:
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[did] = (until, value)

    async def _fetch(self, did: str) -> KeyTable:
        from paywire.identity.fetch import FetchError, guarded_get

        url = document_url(did)
        if self.dev:  # local development: plain http to a loopback/private host
            host = url.split("/")[2].rsplit(":", 1)[0]
            if host in ("localhost", "127.0.0.1", "[::1]"):
                url = "http" + url[len("https"):]
        try:
            body = await guarded_get(url, allow_private=self.dev, timeout=self.timeout, max_bytes=MAX_DOCUMENT,
                                     accept="application/did+json, application/json", what=f"{did}'s document")
        except FetchError as exc:
            raise DidError(f"did:web: {exc}") from None
        return parse_document(did, body)


__all__ = ["DidWebResolver", "KeyTable", "document_url", "parse_document"]
