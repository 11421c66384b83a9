"""The facilitator service surface: HTTP routes and status codes (digest §4, checklist 38-40), bearer auth,
Prometheus metrics, settlement lookups, the JSON catch-all, configuration (TOML < env < flags), and
`paywire facilitator --devnet` run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from paywire.errors import ConfigError
from paywire.facilitator.app import SETTLEMENT_ID_HEADER, create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.config import load_config
from paywire.facilitator.core import Facilitator
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from paywire.x402.models import PaymentRequirements
from tests.helpers import close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import FacilitatorProcess, facilitator_with_store
from tests.test_facilitator_settle import body, sid_of

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKEN = "s3cret-token"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module")
async def served(net, tmp_path: Path):
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    fac = Facilitator([facilitator_with_store(net, store)], store=store)
    async with serve_asgi(create_app(fac, bearer_token=TOKEN)) as url:
        yield url, store
    await store.aclose()


async def test_routes_auth_and_status_codes(net, served):
    """/health and /supported are public; /verify, /settle, /settlements and /metrics need the bearer token;
    malformed bodies are 400 with a JSON error; payment failures are 200."""
    url, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    req = offer(net)
    p = await sign(req, payer_of(net))
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(url + "/health")).json() == {"status": "ok"}
        supported = (await http.get(url + "/supported")).json()
        assert {"x402Version": 2, "scheme": "exact", "network": "eip155:31337"} in supported["kinds"]
        assert supported["signers"] == {"eip155:*": [net.facilitator.address]}
        for method, path in (("POST", "/verify"), ("POST", "/settle"), ("GET", "/metrics"),
                             ("GET", "/settlements/x")):
            r = await http.request(method, url + path, json=body(p, req))
            assert r.status_code == 401 and r.json() == {"error": "unauthorized"}, path
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.post(url + "/verify", json=body(p, req), headers=wrong)).status_code == 401
        r = await http.post(url + "/verify", content=b"{not json", headers=auth)
        assert r.status_code == 400 and r.json()["reason"] == "invalid_json"
        r = await http.post(url + "/settle", json={"paymentPayload": {}}, headers=auth)
        assert r.status_code == 400 and r.json() == {"error": "Missing paymentPayload or paymentRequirements",
                                                      "reason": "invalid_payload"}
        r = await http.post(url + "/settle", json={"x402Version": 2, "paymentPayload": {"x": 1},
                                                   "paymentRequirements": {}}, headers=auth)
        assert r.status_code == 400 and "error" in r.json()
        r = await http.get(url + "/no-such-route")
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
        underpaid = await sign(offer(net, 1), payer_of(net))
        r = await http.post(url + "/verify", json=body(underpaid, req), headers=auth)
        assert r.status_code == 200 and r.json()["isValid"] is False
        assert (await http.post(url + "/verify", json=body(p, req), headers=auth)).json()["isValid"] is True


async def test_settlement_lookup_and_metrics(net, served):
    """/settle names its record in X-Paywire-Settlement-Id; GET /settlements/{id} and the client's
    settlement() return it; /metrics exposes request, verify, settle and record counts."""
    url, _ = served
    req = offer(net, 2_222)
    p = await sign(req, payer_of(net))
    client = HttpFacilitatorClient(url, bearer_token=TOKEN)
    try:
        assert (await client.verify(p, req)).is_valid
        s = await client.settle(p, req)
        assert s.success
        rec = await client.settlement(sid_of(p, req))
        assert rec is not None and rec["state"] == "settled" and rec["transaction"] == s.transaction
        assert rec["payer"] == net.payer.address.lower() and rec["amount"] == "2222"
        assert "rawTx" not in rec and "raw_tx" not in rec
        assert await client.settlement("0" * 40) is None
    finally:
        await client.aclose()
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        again = await http.post(url + "/settle", json=body(p, req))
        assert again.headers[SETTLEMENT_ID_HEADER] == sid_of(p, req)
        # the answer's headers are what a JSONResponse sends: id, length, type (no charset), and nothing else
        assert [k.lower() for k, _ in again.headers.raw if k.lower() not in (b"date", b"server")] == \
            [SETTLEMENT_ID_HEADER.lower().encode(), b"content-length", b"content-type"]
        assert again.headers["content-type"] == "application/json"
        assert int(again.headers["content-length"]) == len(again.content) and again.json()["success"] is True
        m = await http.get(url + "/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = m.text
    assert 'paywire_facilitator_verify_total{reason="",result="valid"}' in text
    assert 'paywire_facilitator_settle_total{reason="",result="success"} 2' in text
    assert 'paywire_facilitator_settlements{state="settled"} 1' in text
    assert 'paywire_facilitator_http_requests_total{route="/settle",status="200"} 2' in text
    assert "# TYPE paywire_facilitator_http_request_duration_seconds histogram" in text
    assert 'paywire_facilitator_up 1' in text


async def test_unexpected_errors_are_json_500_without_traceback(net):
    """A bug anywhere below the routes becomes 500 {"error": "internal error"}, never a traceback."""

    class Broken(Facilitator):
        def supported(self):  # type: ignore[override]
            raise RuntimeError("boom: secret detail")

    app = create_app(Broken([]))
    async with serve_asgi(app) as url, httpx.AsyncClient(timeout=60) as http:
        r = await http.get(url + "/supported")
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "boom" not in r.text and "Traceback" not in r.text


async def test_a_bug_on_the_verify_and_settle_routes_is_a_json_500(net):
    """``POST /verify`` and ``/settle`` bypass Starlette: a bug below them is still 500 {"error": "internal
    error"} with no detail, and GET on them is still 405."""

    class Broken(Facilitator):
        async def verify(self, payload, requirements):  # type: ignore[override]
            raise RuntimeError("boom: secret detail")

        async def settle(self, payload, requirements):  # type: ignore[override]
            raise RuntimeError("boom: secret detail")

    req = offer(net)
    p = await sign(req, payer_of(net))
    async with serve_asgi(create_app(Broken([]))) as url, httpx.AsyncClient(timeout=60) as http:
        for path in ("/verify", "/settle"):
            r = await http.post(url + path, json=body(p, req))
            assert r.status_code == 500 and r.json() == {"error": "internal error"}, path
            assert "boom" not in r.text and "Traceback" not in r.text
            assert (await http.get(url + path)).status_code == 405


async def test_verify_works_when_the_app_is_mounted_under_a_prefix(net):
    """Mounted inside another ASGI app (``/fac``), ``POST /fac/verify`` still reaches the handler."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from tests.helpers import full_facilitator

    req = offer(net)
    p = await sign(req, payer_of(net))
    outer = Starlette(routes=[Mount("/fac", app=create_app(full_facilitator(net)))])
    async with serve_asgi(outer) as url, httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url + "/fac/verify", json=body(p, req))
    assert r.status_code == 200 and r.json()["isValid"] is True, r.text


async def test_settle_of_a_plugin_bug_is_an_answer_not_a_500(net, tmp_path: Path):
    """Exceptions inside settle are answered as success:false JSON with HTTP 200 (checklist 39)."""
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'f.db'}")
    fac = facilitator_with_store(net, store)

    async def explode(*a, **k):
        raise RuntimeError("store exploded")

    fac.engine._settle_stored = explode  # type: ignore[method-assign]
    req = offer(net)
    p = await sign(req, payer_of(net))
    async with serve_asgi(create_app(Facilitator([fac], store=store))) as url, httpx.AsyncClient(timeout=60) as http:
        r = await http.post(url + "/settle", json=body(p, req))
    assert r.status_code == 200
    assert r.json()["success"] is False and r.json()["errorReason"] == "unexpected_settle_error"
    await store.aclose()


# ------------------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------------------


async def test_config_layers_toml_env_flags(tmp_path: Path):
    toml = tmp_path / "fac.toml"
    toml.write_text(
        'store = "sqlite:///from-toml.db"\nport = 5000\nconfirmations = 2\nbearer_token_env = "MY_TOKEN"\n'
        '[networks."eip155:8453"]\nrpc = "https://base.example"\nkeys_env = "BASE_KEYS"\nmax_fee_gwei = 50\n'
        '[networks."eip155:31337"]\nrpc = "anvil"\nconfirmations = 1\n'
    )
    env = {"BASE_KEYS": "0x01,0x02", "MY_TOKEN": "tok", "PAYWIRE_FACILITATOR_PORT": "6000",
           "PAYWIRE_STORE": "postgresql://db/x"}
    cfg = load_config(toml, env=env)
    cfg.validate()
    assert (cfg.store, cfg.port, cfg.bearer_token, cfg.confirmations) == ("postgresql://db/x", 6000, "tok", 2)
    base, local = cfg.networks
    assert (base.network, base.rpc, base.keys, base.max_fee_gwei) == ("eip155:8453", "https://base.example",
                                                                     ["0x01", "0x02"], 50)
    assert cfg.confirmations_for(base) == 2 and cfg.confirmations_for(local) == 1
    flags = load_config(toml, env=env, networks=["eip155:8453=https://other.example"], keys=["0x09"],
                        overrides={"port": 0, "store": None})
    assert flags.port == 0 and flags.store == "postgresql://db/x"
    assert flags.networks[0].rpc == "https://other.example" and flags.networks[0].keys == ["0x09"]
    env_only = load_config(None, env={"PAYWIRE_FACILITATOR_NETWORKS": "eip155:1=https://eth.example",
                                      "PAYWIRE_FACILITATOR_KEYS": "0xaa"})
    assert [(n.network, n.keys) for n in env_only.networks] == [("eip155:1", ["0xaa"])]


@pytest.mark.parametrize(("toml", "env", "message"), [
    ('port = 1\nnonsense = 2\n', {}, "unknown config keys: nonsense"),
    ('[networks."eip155:1"]\nrpc = "ftp://x"\nkeys = ["0x01"]\n', {}, "rpc must be"),
    ('[networks."solana:1"]\nrpc = "https://x"\nkeys = ["0x01"]\n', {}, "only eip155"),
    ('[networks."eip155:1"]\nrpc = "https://x"\n', {}, "no signer keys"),
    ('[networks."eip155:1"]\nrpc = "https://x"\nkeys_env = "NOPE"\n', {}, "NOPE"),
    ("", {}, "no networks configured"),
    ("this is = = not toml", {}, "not valid TOML"),
])
async def test_config_errors_say_what_to_fix(tmp_path: Path, toml: str, env: dict, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env=env).validate()


# ------------------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------------------


async def test_paywire_facilitator_devnet_settles_a_payment(tmp_path: Path):
    """`paywire facilitator --devnet --token …` serves a fresh embedded chain; a payment signed with the
    devnet payer key verifies and settles over HTTP, and the settlement is on the chain it serves."""
    from paywire.chain import HttpTransport, RpcChain
    from paywire.devnet import DevnetInfo
    from paywire.evm import token
    from paywire.evm.signer import LocalSigner
    from paywire.schemes.evm_exact import exact_evm_offer
    from tests.helpers import sign as sign_payload

    state = tmp_path / "devnet.json"
    proc = FacilitatorProcess(["--devnet", "--token", TOKEN, "--devnet-state", str(state)], cwd=tmp_path)
    url = proc.start()
    try:
        info = DevnetInfo(**json.loads(state.read_text()))
        req: PaymentRequirements = exact_evm_offer(info.asset, info.addresses["payee"], amount=1_500)
        p = await sign_payload(req, LocalSigner(bytes.fromhex(info.payer_key[2:])))
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            assert (await http.post(url + "/verify", json=body(p, req))).json()["isValid"] is True
            s = (await http.post(url + "/settle", json=body(p, req))).json()
        assert s["success"] is True, s
        chain = RpcChain(HttpTransport(str(info.rpc_url)))
        try:
            bal = token.decode_uint(await chain.call(info.token, token.balance_of(info.addresses["payee"])))
            assert bal == 1_500
        finally:
            await chain.aclose()
        assert not (tmp_path / "paywire.db").exists()  # --devnet keeps its records in a fresh temp store
    finally:
        proc.stop()


async def test_paywire_facilitator_rejects_bad_configuration(tmp_path: Path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "paywire.cli.main", "facilitator", "--network", "eip155:1=ftp://x"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "configuration error" in r.stdout and "Traceback" not in r.stdout + r.stderr
