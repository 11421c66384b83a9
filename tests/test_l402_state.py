"""L402 keeps no state for unpaid challenges (issue 11 item 3): root keys derive from a master secret and the
token identifier, so 10,000 unpaid requests to an L402 route leave the store's row count where it was, and a
token bought afterwards still works (checklist 95, 99, 100). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")

from paywire.l402 import macaroons as M
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.store.db import Database, open_database
from tests.lightning_fixtures import SigningNode

UNPAID = 10_000
SATS = 21


async def _table_rows(db: Database) -> dict[str, int]:
    """Row count of every table in the store (the schema the URL points at)."""
    if db.dialect == "postgres":
        names = [r["table_name"] for r in await db.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]
    else:
        names = [r["name"] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {n: int((await db.fetchone(f'SELECT COUNT(*) AS n FROM "{n}"'))["n"]) for n in names}  # type: ignore[index]


def _l402_macaroon(resp: httpx.Response) -> tuple[str, str]:
    value = next(v for v in resp.headers.get_list("www-authenticate") if v.startswith("L402 macaroon="))
    m = re.search(r'macaroon="([^"]+)", invoice="([^"]+)"', value)
    assert m is not None, f"no L402 macaroon challenge in {value!r}"
    return m.group(1), m.group(2)


async def test_unpaid_l402_challenges_leave_no_rows(store_url: str) -> None:
    node = SigningNode()
    runs: list[str] = []

    async def weather(request: Request) -> JSONResponse:
        runs.append(request.state.payment.protocol)
        return JSONResponse({"forecast": "sunny"})

    app = Starlette(routes=[Route("/weather", weather)])
    mw = PaymentMiddleware(app, [PaidRoute("GET /weather", l402="weather", sats=SATS)], "http://127.0.0.1:9",
                           store=store_url, lightning=node)
    db = open_database(store_url)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://seller") as c:
            first = await c.get("/weather")
            assert first.status_code == 402, f"an unpaid request got {first.status_code}"
            before = await _table_rows(db)
            for _ in range(UNPAID - 1):
                r = await c.get("/weather")
                assert r.status_code == 402, f"an unpaid request got {r.status_code}"
            after = await _table_rows(db)
            assert after == before, f"{UNPAID} unpaid requests changed the store's row counts: {before} → {after}"

            macaroon, _invoice = _l402_macaroon(r)
            payment_hash = M.identifier_of(M.decode(macaroon)).payment_hash.hex()
            preimage = node.pay(payment_hash)
            for _ in range(2):
                paid = await c.get("/weather", headers={"Authorization": f"L402 {macaroon}:{preimage}"})
                assert paid.status_code == 200, f"a token paid after {UNPAID} challenges got {paid.status_code}"
            assert runs == ["l402", "l402"], f"the handler ran {runs} for two requests with a paid token"
            raw = base64.b64decode(macaroon)
            forged = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 0x01])).decode()  # always a different signature
            bad = await c.get("/weather", headers={"Authorization": f"L402 {forged}:{preimage}"})
            assert bad.status_code == 401, f"a token with a broken signature got {bad.status_code}"
    finally:
        await mw.flow.aclose()
        await db.aclose()


async def test_token_with_a_stored_root_key_still_verifies_until_it_expires(store_url: str) -> None:
    """Upgrade path: a token minted before root keys were derived (random key stored under sha256(identifier))
    keeps verifying; revoking it works; once expired, startup pruning deletes its row."""
    import os

    from paywire.l402.caveats import services_caveat, valid_until_caveat
    from paywire.l402.identifier import Identifier
    from paywire.l402.server import L402Denied, L402Ok, L402Server
    from paywire.store.l402 import L402Store

    node = SigningNode()
    store = await L402Store.open(store_url)
    try:
        server = L402Server(store, node, service="weather", token_ttl=600)
        inv = await node.create_invoice(SATS)
        ident = Identifier.new(bytes.fromhex(inv.payment_hash))
        key = os.urandom(32)
        await store.put_legacy(ident.key_id, key, payment_hash=inv.payment_hash, token_id=ident.token_id.hex(),
                               service="weather")
        mac = M.encode(M.mint(ident, key, [services_caveat({"weather": 0}),
                                           valid_until_caveat("weather", int(store.clock()) + 600)]))
        pre = node.pay(inv.payment_hash)
        assert isinstance(await server.verify(f"L402 {mac}:{pre}"), L402Ok), "a pre-upgrade token stopped working"
        assert await server.prune() == 0, "pruning deleted the root key of a token that has not expired"
        assert isinstance(await server.verify(f"L402 {mac}:{pre}"), L402Ok), "pruning broke a live token"
        assert await server.prune(now=store.clock() + 601) == 1, "an expired token's stored root key was kept"
        gone = await server.verify(f"L402 {mac}:{pre}")
        assert isinstance(gone, L402Denied) and gone.status == 401, f"a pruned token got {gone}"
    finally:
        await store.aclose()


async def test_revocation_is_one_row_until_the_token_expires(store_url: str) -> None:
    """Checklist 100: a revoked token (every copy and attenuation) stops verifying; the revocation row goes
    once the token has expired anyway; a macaroon that is not ours revokes nothing and writes nothing."""
    from paywire.l402.caveats import valid_until_caveat
    from paywire.l402.server import L402Denied, L402Ok, L402Server
    from paywire.store.l402 import L402Store

    node = SigningNode()
    store = await L402Store.open(store_url)
    try:
        server = L402Server(store, node, service="weather", token_ttl=600)
        ch = await server.challenge(SATS)
        pre = node.pay(ch.payment_hash)
        narrowed = M.encode(M.attenuate(M.decode(ch.macaroon), [valid_until_caveat("weather", 2**31)]))
        assert isinstance(await server.verify(f"L402 {ch.macaroon}:{pre}"), L402Ok), "a paid token was refused"
        assert await server.revoke(narrowed), "revoking through an attenuated copy did nothing"
        assert not await server.revoke(ch.macaroon), "a second revocation reported a change"
        denied = await server.verify(f"L402 {ch.macaroon}:{pre}")
        assert isinstance(denied, L402Denied) and denied.reason == "token revoked", f"a revoked token got {denied}"
        forged = M.encode(M.mint(M.identifier_of(M.decode(ch.macaroon)), b"k" * 32, []))
        assert not await server.revoke(forged), "a forged macaroon revoked something"
        rows = await _table_rows(store.db)
        assert rows["l402_revoked"] == 1, f"revocations kept {rows['l402_revoked']} rows for one token"
        assert await server.prune(now=store.clock() + 601) == 1, "an expired token's revocation was kept"
    finally:
        await store.aclose()


async def test_master_secret_is_private_and_shared(tmp_path, caplog) -> None:
    """SQLite: the master secret lives beside the database file, mode 0600, made once for every process that
    opens the store; it is never written to a log."""
    import logging
    import stat

    from paywire.store.l402 import KEY_FILE_SUFFIX, L402Store

    url = f"sqlite:///{tmp_path / 'seller.db'}"
    caplog.set_level(logging.DEBUG)
    a, b = await L402Store.open(url), await L402Store.open(url)
    try:
        secret = await a.master_secret()
        assert await b.master_secret() == secret, "two stores on one database derive different root keys"
        key_file = tmp_path / ("seller.db" + KEY_FILE_SUFFIX)
        mode = stat.S_IMODE(key_file.stat().st_mode)
        assert mode == 0o600, f"the L402 master secret file has mode {mode:o}"
        assert secret not in (tmp_path / "seller.db").read_bytes(), "the master secret is in the database file"
        assert secret.hex() not in caplog.text, "the master secret was logged"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "a temporary key file was left"
    finally:
        await a.aclose()
        await b.aclose()
