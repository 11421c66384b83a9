"""``did:web``: the DID-to-URL mapping, strict DID documents, and the guarded resolver against a real HTTP server.

The method requires HTTPS; the resolver's ``dev=True`` (local development only) lets it fetch plain http from a
loopback host, which is how these tests serve documents from 127.0.0.1. Without it, the same document is
refused. Documents that are malformed, name another DID, hold keys of another controller or whose two
encodings of one key disagree are refused with a reason; a huge, redirecting or silent server is refused too.
A JWS offer whose ``kid`` is a ``did:web`` key verifies with the resolved keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from paywire.identity.did import DidError, Identity, b58encode, parse_did_key
from paywire.identity.didweb import DidWebResolver, document_url, parse_document
from paywire.identity.offers import ArtifactSigner, ProofError, offer_payload, verify_offer
from paywire.serving import serve_asgi

ED_KEY = bytes(range(7, 39))
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def document(did: str, public: bytes, **changes: Any) -> dict[str, Any]:
    method = {"id": "#key-1", "type": "JsonWebKey2020", "controller": did,
              "publicKeyJwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64(public)},
              "publicKeyMultibase": "z" + b58encode(bytes([0xED, 0x01]) + public)}
    method.update(changes.pop("method", {}))
    return {"@context": ["https://www.w3.org/ns/did/v1"], "id": did, "verificationMethod": [method],
            "assertionMethod": ["#key-1"], **changes}


def test_document_url_follows_the_method() -> None:
    assert document_url("did:web:example.com") == "https://example.com/.well-known/did.json"
    assert document_url("did:web:example.com:user:alice") == "https://example.com/user/alice/did.json"
    assert document_url("did:web:localhost%3A8443#key-1") == "https://localhost:8443/.well-known/did.json"
    for bad in ("did:key:z6Mk", "did:web:", "did:web:exa mple.com", "did:web:example.com:..", "did:web:a:b%2Fc"):
        with pytest.raises(DidError):
            document_url(bad)
    assert Identity.from_did("did:web:example.com", "offer").did == "did:web:example.com"


def test_malformed_or_mismatched_documents_are_refused() -> None:
    did, pub = "did:web:example.com", bytes(range(32))
    assert parse_document(did, json.dumps(document(did, pub)).encode()) == {f"{did}#key-1": ("Ed25519", pub)}
    other = bytes(range(1, 33))
    cases = {
        b"not json": "not JSON",
        json.dumps([1]).encode(): "not an object",
        json.dumps(document("did:web:evil.example", pub)).encode(): "is for",
        json.dumps(document(did, pub, method={"id": "did:web:evil.example#k"})).encode(): "not this DID's",
        json.dumps(document(did, pub, method={"controller": "did:web:evil.example"})).encode(): "another controller",
        json.dumps(document(did, pub, method={"publicKeyMultibase": "z" + b58encode(bytes([0xED, 0x01]) + other)}))
        .encode(): "do not match",
        json.dumps(document(did, pub, method={"publicKeyJwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
                                              "publicKeyMultibase": None})).encode(): "32 bytes",
        json.dumps(document(did, pub, method={"publicKeyJwk": {"kty": "EC", "crv": "secp256k1", "x": _b64(b"\1" * 32),
                                                               "y": _b64(b"\2" * 32)},
                                              "publicKeyMultibase": None})).encode(): "not a point",
        json.dumps({"id": did, "verificationMethod": []}).encode(): "no verification key",
    }
    for body, reason in cases.items():
        with pytest.raises(DidError, match=reason):
            parse_document(did, body)


class Server:
    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.mode = "ok"
        self.url = ""
        self.never = asyncio.Event()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server():
    srv = Server()

    async def did_json(request: Request) -> Response:
        if srv.mode == "redirect":
            return RedirectResponse("http://127.0.0.1:9/.well-known/did.json", status_code=302)
        if srv.mode == "silent":
            await srv.never.wait()
        return Response(srv.body, media_type="application/did+json")

    async def other(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/.well-known/did.json", did_json), Route("/{p:path}", other)])
    async with serve_asgi(app) as url:
        srv.url = url
        yield srv


def did_of(srv: Server) -> str:
    return "did:web:" + srv.url.split("://")[1].replace(":", "%3A")


@pytest.mark.asyncio(loop_scope="module")
async def test_resolver_fetches_a_document_and_a_did_web_jws_offer_verifies(server: Server) -> None:
    signer = ArtifactSigner(ED_KEY, format="jws", key_type="Ed25519", kid=did_of(server) + "#key-1")
    public = parse_did_key(signer.did).public_key
    server.mode, server.body = "ok", json.dumps(document(did_of(server), public)).encode()
    keys = await DidWebResolver(dev=True).keys(did_of(server))
    assert keys == {did_of(server) + "#key-1": ("Ed25519", public)}
    offer = signer.sign_offer(offer_payload("https://a.example/x", "exact", "eip155:8453", USDC, PAY_TO, 5, 0))
    assert verify_offer(offer, keys).signer == did_of(server)
    with pytest.raises(ProofError, match="cannot resolve kid"):
        verify_offer(offer)  # without the document there is no key for the kid
    wrong = {did_of(server) + "#key-1": ("Ed25519", bytes(32))}
    with pytest.raises(ProofError, match="does not verify"):
        verify_offer(offer, wrong)


@pytest.mark.asyncio(loop_scope="module")
async def test_resolver_refuses_loopback_without_dev_and_hostile_servers(server: Server) -> None:
    server.mode, server.body = "ok", json.dumps(document(did_of(server), bytes(range(32)))).encode()
    with pytest.raises(DidError, match=r"https only|private or loopback"):
        await DidWebResolver().keys(did_of(server))
    server.body = b" " * (70 * 1024)
    with pytest.raises(DidError, match="larger than"):
        await DidWebResolver(dev=True).keys(did_of(server))
    server.mode = "redirect"
    with pytest.raises(DidError, match="answered 302"):
        await DidWebResolver(dev=True).keys(did_of(server))
    server.mode = "silent"
    with pytest.raises(DidError, match="did not answer"):
        await DidWebResolver(dev=True, timeout=0.3).keys(did_of(server))
    server.mode = "ok"
    server.never.set()  # let the silent handler finish
