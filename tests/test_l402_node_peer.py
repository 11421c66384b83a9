"""paywire's buyer against an L402 server we did not write (tests/node/mpp/l402_server.mjs: invoices from a real
LNbits with the FakeWallet funding source, macaroons from the npm ``macaroon`` package pinned 3.0.4, invoice
decoding and header helpers from ``@getalby/lightning-tools`` 9.0.1). Checklist 95–101, 103."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")

from paywire.client.engine import Buyer
from paywire.client.httpx_transport import PaymentTransport, receipt_of
from paywire.client.policy import Policy
from paywire.l402 import macaroons as M
from paywire.l402.header import L402Challenge, parse_challenges_l402
from paywire.l402.identifier import Identifier
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.lnbits import LnbitsBackend
from paywire.lightning.lnbits_dev import LnbitsDev
from tests.lightning_fixtures import lnbits_node
from tests.node_peers import MPP_DIR, ensure_mpp_peers

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.node, pytest.mark.interop]
SATS = 21
SERVER = MPP_DIR / "l402_server.mjs"
POLICY = Policy(max_per_payment="$0.10", total="$1", btc_usd="$100000")  # all protocols: L402 is the one offered


@dataclass
class World:
    ln: LnbitsDev
    node: str
    payer: LnbitsBackend
    payee: LnbitsBackend


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world() -> AsyncIterator[World]:
    node = ensure_mpp_peers()
    async with lnbits_node() as ln:
        assert ln.payer is not None and ln.payee is not None
        payer = LnbitsBackend(ln.url, admin_key=ln.payer.admin_key)
        payee = LnbitsBackend(ln.url, invoice_key=ln.payee.invoice_key)
        yield World(ln, node, payer, payee)
        await payer.aclose()
        await payee.aclose()


@contextlib.asynccontextmanager
async def node_l402(w: World, log_dir: Path, forms: str = "macaroon", services: str = "weather",
                    accept: str = "L402,LSAT") -> AsyncIterator[str]:
    """The Node L402 server (its invoices go to the LNbits payee wallet); yields its base URL."""
    assert w.ln.payee is not None
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "LNBITS_URL": w.ln.url, "LNBITS_INVOICE_KEY": w.ln.payee.invoice_key,
           "L402_PRICE_SATS": str(SATS), "L402_FORMS": forms, "L402_SERVICES": services,
           "L402_ACCEPT_SCHEMES": accept}
    with open(log_dir / "l402_server.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(w.node, str(SERVER), cwd=MPP_DIR, env=env,
                                                    stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=log)
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if not line.startswith("LISTENING "):
                raise AssertionError(f"l402_server.mjs did not start: {line!r} "
                                     f"{(log_dir / 'l402_server.log').read_text(errors='replace')}")
            yield f"http://127.0.0.1:{int(line.split()[1])}"
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(url + "/stats")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out


@pytest.mark.parametrize(("forms", "accept"), [
    ("macaroon", "L402,LSAT"), ("lsat,macaroon", "L402,LSAT"), ("alby", "L402,LSAT"), ("token", "L402,LSAT"),
    ("lsat", "LSAT")], ids=["aperture-l402", "aperture-pair", "alby-header", "spec-token", "lsat-era"])
async def test_our_buyer_pays_node_l402(world: World, tmp_path: Path, forms: str, accept: str) -> None:
    """Each challenge form the Node server can emit (aperture's ``macaroon=``, aperture's LSAT+L402 pair, Alby's
    ``makeL402AuthenticateHeader`` with no comma after ``version``, the spec's ``token=``, and an LSAT-only
    server that takes only ``LSAT`` credentials): our buyer pays the LNbits invoice once (payer −21 sat, payee
    +21 sat, invoice paid), the ledger records it with the payment hash, and the token is reused for the next
    requests (checklist 97, 98, 103)."""
    assert world.ln.payer is not None and world.ln.payee is not None
    async with node_l402(world, tmp_path, forms, accept=accept) as url:
        async with httpx.AsyncClient(timeout=30) as plain:
            r = await plain.get(url + "/weather")
        assert r.status_code == 402 and r.headers["cache-control"] == "no-store"
        assert len(r.headers.get_list("www-authenticate")) == len(forms.split(","))

        payer_before = await world.ln.balance_msat(world.ln.payer)
        payee_before = await world.ln.balance_msat(world.ln.payee)
        b = Buyer([], POLICY, store=f"sqlite:///{tmp_path / 'b.db'}", account="0x" + "11" * 20,
                  lightning=world.payer)
        async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
            first = await c.get(url + "/weather")
            assert first.status_code == 200, first.text
            rest = [await c.get(url + "/weather") for _ in range(2)]
        assert all(x.status_code == 200 for x in rest), [x.text for x in rest]
        body = first.json()
        assert body["server"] == "node-l402" and {x.json()["paymentHash"] for x in rest} == {body["paymentHash"]}

        assert payer_before - await world.ln.balance_msat(world.ln.payer) == SATS * 1000  # paid once
        assert await world.ln.balance_msat(world.ln.payee) - payee_before == SATS * 1000
        assert (await world.payee.lookup_invoice(body["paymentHash"])).paid

        s = await stats(url)
        assert s["invoices"][-1] == body["paymentHash"] and s["challenges"] == 2  # the plain probe + the buyer
        assert s["served"] == 3 and list(s["servedByToken"].values()) == [3] and s["refused"] == {}

        rc = receipt_of(first)
        assert rc is not None and rc.protocol == "l402" and rc.tx == body["paymentHash"]
        assert receipt_of(rest[0]) is None  # reusing the token is not a payment
        paid = [h for h in await b.history() if h.outcome == "paid"]
        assert len(paid) == 1 and paid[0].protocol == "l402" and paid[0].tx == body["paymentHash"]
        assert paid[0].amount == SATS and paid[0].usd_micros == 21_000 and paid[0].status_code == 200
        await b.aclose()


async def test_revoked_token_is_paid_for_again(world: World, tmp_path: Path) -> None:
    """The server revokes every token (drops the root keys): our cached token gets 401, the buyer drops it,
    pays the fresh challenge and is served; two invoices paid in all (checklist 100, 103)."""
    assert world.ln.payer is not None
    async with node_l402(world, tmp_path) as url:
        before = await world.ln.balance_msat(world.ln.payer)
        b = Buyer([], POLICY, store=f"sqlite:///{tmp_path / 'b.db'}", account="0x" + "11" * 20,
                  lightning=world.payer)
        async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
            one = await c.get(url + "/weather")
            assert one.status_code == 200, one.text
            async with httpx.AsyncClient(timeout=30) as plain:
                assert (await plain.post(url + "/revoke")).json() == {"revoked": 1}
            two = await c.get(url + "/weather")
            assert two.status_code == 200, two.text
            three = await c.get(url + "/weather")
            assert three.status_code == 200
        assert one.json()["paymentHash"] != two.json()["paymentHash"] == three.json()["paymentHash"]
        assert before - await world.ln.balance_msat(world.ln.payer) == 2 * SATS * 1000
        s = await stats(url)
        assert s["refused"] == {"unknown-root-key": 1} and s["served"] == 3
        paid = [h for h in await b.history() if h.outcome == "paid"]
        assert sorted(h.tx or "" for h in paid) == sorted([one.json()["paymentHash"], two.json()["paymentHash"]])
        await b.aclose()


def _raw(mac_b64: str) -> bytes:
    return base64.b64decode(mac_b64)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_node_server_refuses_tampered_tokens(world: World, tmp_path: Path) -> None:
    """With a paid invoice, tokens altered on our side are refused by the Node server (js-macaroon checks the
    HMAC chain; the preimage is checked against the identifier's payment hash): wrong preimage, flipped
    signature, an extended expiry caveat, a macaroon re-minted under a guessed root key, an unknown identifier
    → 401 with a fresh challenge; garbage → 402. A genuine attenuation made with pymacaroons (narrower expiry)
    is accepted, one that names another service or has expired is refused (checklist 96, 99–101)."""
    async with node_l402(world, tmp_path) as url, httpx.AsyncClient(timeout=30) as c:
        r = await c.get(url + "/weather")
        ch: L402Challenge = parse_challenges_l402(r.headers.get_list("www-authenticate"))[0]
        assert ch.scheme == "L402" and r.headers["www-authenticate"].startswith('L402 macaroon="')
        mac = M.decode(ch.macaroon)
        ident = M.identifier_of(mac)
        inv = decode_bolt11(ch.invoice)
        assert ident.version == 0 and ident.payment_hash.hex() == inv.payment_hash and inv.amount_sat == SATS
        assert M.encode(mac) == ch.macaroon  # std padded base64 of V2 binary, byte-identical after our round trip
        caveats = [str(cv) for cv in M.first_party_caveats(mac)]
        assert caveats[0] == "services=weather:0" and caveats[1].startswith("weather_valid_until=")
        pre = (await world.payer.pay_invoice(ch.invoice)).preimage

        async def send(value: str) -> httpx.Response:
            return await c.get(url + "/weather", headers={"Authorization": value})

        raw = _raw(ch.macaroon)
        flipped = raw[:-1] + bytes([raw[-1] ^ 1])  # V2 binary ends with the 32-byte signature
        assert raw.endswith(bytes.fromhex(mac.signature))
        until = caveats[1].split("=", 1)[1].encode()
        extended = raw.replace(b"weather_valid_until=" + until, b"weather_valid_until=" + b"9" * len(until))
        assert extended != raw and len(extended) == len(raw)
        guessed = M.mint(ident, os.urandom(32), caveats)
        stranger = M.mint(Identifier.new(ident.payment_hash), os.urandom(32), caveats)
        refused = {
            "preimage": f"L402 {ch.macaroon}:{os.urandom(32).hex()}",
            "signature": f"L402 {_b64(flipped)}:{pre}",
            "extended-expiry": f"L402 {_b64(extended)}:{pre}",
            "guessed-root-key": f"L402 {M.encode(guessed)}:{pre}",
            "unknown-root-key": f"L402 {M.encode(stranger)}:{pre}",
            "other-service": f"L402 {M.encode(M.attenuate(mac, ['services=other:0']))}:{pre}",
            "expired": f"L402 {M.encode(M.attenuate(mac, [f'weather_valid_until={int(time.time()) - 5}']))}:{pre}",
        }
        for name, value in refused.items():
            bad = await send(value)
            assert bad.status_code == 401, (name, bad.status_code, bad.text)
            fresh = parse_challenges_l402(bad.headers.get_list("www-authenticate"))
            assert fresh and fresh[0].invoice != ch.invoice, name
        garbage = await send("L402 garbage")
        assert garbage.status_code == 402 and parse_challenges_l402(garbage.headers.get_list("www-authenticate"))

        narrower = M.attenuate(mac, [f"weather_valid_until={int(time.time()) + 120}"])
        ok = [await send(f"L402 {ch.macaroon}:{pre}"), await send(f"LSAT {ch.macaroon}:{pre}"),
              await send(f"L402 {M.encode(narrower)}:{pre}")]
        assert [x.status_code for x in ok] == [200, 200, 200], [x.text for x in ok]

        s = await stats(url)
        assert s["refused"] == {"preimage": 1, "signature": 3, "unknown-root-key": 1, "caveat": 2, "malformed": 1}
        assert s["served"] == 3 and s["challenges"] == 1 + len(refused) + 1


async def test_two_services_on_one_host_pay_once_each(world: World, tmp_path: Path) -> None:
    """aperture-style host fronting two services (tokens carry ``services=<one>:0``): alternating requests
    should pay once per service, then reuse each service's token (checklist 101, 103)."""
    assert world.ln.payer is not None
    async with node_l402(world, tmp_path, services="weather,quotes") as url:
        before = await world.ln.balance_msat(world.ln.payer)
        b = Buyer([], POLICY, store=f"sqlite:///{tmp_path / 'b.db'}", account="0x" + "11" * 20,
                  lightning=world.payer)
        async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
            for path in ("/weather", "/quotes", "/weather", "/quotes"):
                r = await c.get(url + path)
                assert r.status_code == 200 and r.json()["service"] == path[1:], r.text
        await b.aclose()
        assert (await stats(url))["served"] == 4
        assert before - await world.ln.balance_msat(world.ln.payer) == 2 * SATS * 1000
