"""L402 identity caveats: a paid token attenuated with ``identity=<DID>`` serves only a request proving that DID.

A seller route takes L402 and RFC 9421 agent signatures (``identity="agent-sig"``); the agent pays the invoice
(a real signed regtest invoice) and narrows its token to its own ``did:key``. The same token then works with that
agent's signature, is refused (with the reason) under another agent's valid signature, and without one. A later
caveat may only narrow the identities an earlier one allows.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.identity.agent import DIRECTORY_PATH, AgentKey, directory
from paywire.l402 import macaroons as M
from paywire.l402.caveats import Caveat, CaveatError, check_caveats, identity_caveat, identity_satisfier
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from tests.lightning_fixtures import SigningNode

SATS = 21


def test_identity_caveat_narrows_and_binds() -> None:
    a, b = "did:key:z6MkA", "did:key:z6MkB"
    ok = [Caveat("services", "weather:0"), identity_caveat(a, b), identity_caveat(a)]
    check_caveats(ok, [identity_satisfier([a])])
    with pytest.raises(CaveatError, match="another identity"):
        check_caveats(ok, [identity_satisfier([b])])  # the last caveat allows only a
    with pytest.raises(CaveatError, match="another identity"):
        check_caveats(ok, [identity_satisfier([])])  # no proof at all
    with pytest.raises(CaveatError, match="widens"):
        check_caveats([identity_caveat(a), identity_caveat(a, b)], [identity_satisfier([a])])
    with pytest.raises(CaveatError):
        identity_caveat("did:key:x,did:key:y")


@pytest.mark.asyncio
async def test_l402_token_bound_to_an_agent_serves_only_that_agent(tmp_path: Path) -> None:
    alice, mallory = AgentKey.generate("http://placeholder"), AgentKey.generate("http://placeholder")

    async def serve_directory(_: Request) -> Response:
        return JSONResponse(directory([alice, mallory]),
                            media_type="application/http-message-signatures-directory+json")

    runs: list[str | None] = []

    async def weather(request: Request) -> JSONResponse:
        runs.append(request.state.payment.identity)
        return JSONResponse({"forecast": "sunny"})

    node = SigningNode()
    dir_app = Starlette(routes=[Route(DIRECTORY_PATH, serve_directory)])
    app = Starlette(routes=[Route("/weather", weather)])
    async with serve_asgi(dir_app) as agent_url:
        alice.agent = mallory.agent = agent_url
        mw = PaymentMiddleware(app, [PaidRoute("GET /weather", l402="weather", sats=SATS, identity="agent-sig")],
                               "http://127.0.0.1:9", store=f"sqlite:///{tmp_path / 'seller.db'}", lightning=node,
                               agent_directories_private=True)
        try:
            async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as c:
                async def get(key: AgentKey | None, auth: str | None) -> httpx.Response:
                    headers = {"Authorization": auth} if auth else {}
                    if key is not None:
                        headers |= key.sign("GET", url + "/weather", {k.lower(): v for k, v in headers.items()},
                                            time.time())
                    return await c.get(url + "/weather", headers=headers)

                first = await get(alice, None)
                assert first.status_code == 402, f"an unpaid request got {first.status_code}"
                value = next(v for v in first.headers.get_list("www-authenticate") if v.startswith("L402 "))
                found = re.search(r'macaroon="([^"]+)"', value)
                assert found is not None
                mac = M.decode(found.group(1))
                preimage = node.pay(M.identifier_of(mac).payment_hash.hex())
                bound = M.encode(M.attenuate(mac, [identity_caveat(alice.did)]))
                token = f"L402 {bound}:{preimage}"

                ok = await get(alice, token)
                assert ok.status_code == 200, f"the bound agent was refused: {ok.status_code} {ok.text}"
                assert runs == [alice.did], f"the handler saw {runs}"
                other = await get(mallory, token)
                assert other.status_code == 401 and "another identity" in other.text, \
                    f"another agent used the bound token: {other.status_code} {other.text}"
                unsigned = await get(None, token)
                assert unsigned.status_code == 402, f"an unsigned request used the bound token: {unsigned.status_code}"
                assert runs == [alice.did], "the handler ran for a refused token"
        finally:
            await mw.flow.aclose()
