"""``exact`` via Permit2 and ``upto`` against the official x402 Python SDK (``x402==2.25.0``), unmodified, with
our Permit2 and proxy contracts at the canonical addresses it hard-codes (embedded chain):

* the SDK's client pays our seller (exact/Permit2 and upto, the handler charging less than the maximum);
* the SDK's FastAPI resource server, settling through OUR facilitator, is paid by our buyer and by the SDK's
  client; its handler sets the actual amount with ``set_settlement_overrides``;
* the SDK's own facilitator verifies and settles an upto payment our client signed, on our contracts;
* our Permit2 digest equals the EIP-712 hash of the SDK's typed data.

Balances are read back from the token after each flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from fastapi import Response

from paywire.chain import JsonRpcServer
from paywire.chain.devkeys import dev_keys
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.client import Policy, x402_client
from paywire.devnet import Devnet
from paywire.evm import permit2 as p2
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_upto.client import UptoEvmClient
from paywire.schemes.registry import default_registry
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements
from tests.helpers import close_devnet
from tests.test_metered import MAXIMUM, PRICE, Env, approve_permit2, open_env, permit2_devnet

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]

SDK_FACILITATOR_KEY = "0x" + dev_keys(6)[5].hex()  # a funded dev key paywire's devnet leaves unused


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=[
    "embedded", pytest.param("anvil", marks=[pytest.mark.anvil, pytest.mark.skipif(
        shutil.which("npm") is None, reason="npm is not on PATH, so anvil cannot be installed")])])
async def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await permit2_devnet(request.param)
    try:
        await approve_permit2(net, net.payer.private_key)
        async with open_env(net, f"sqlite:///{tmp_path_factory.mktemp('interop') / 'seller.db'}") as e:
            yield e
    finally:
        await close_devnet(net)


@contextlib.asynccontextmanager
async def rpc_url(net: Devnet) -> AsyncIterator[str]:
    """A JSON-RPC URL for web3.py inside the SDK: anvil's own, or the embedded chain served on 127.0.0.1."""
    if net.info.rpc_url is not None:
        yield net.info.rpc_url
        return
    server = JsonRpcServer(net.chain.transport)  # type: ignore[attr-defined]
    url = await asyncio.to_thread(server.start)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.stop)


def sdk_client(net: Devnet) -> Any:
    from x402 import x402Client
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.upto import UptoEvmClientScheme

    client = x402Client()
    account = Account.from_key(net.info.payer_key)
    client.register(net.info.network, ExactEvmScheme(account))
    client.register(net.info.network, UptoEvmClientScheme(account))
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token}]})
    return client


async def sdk_get(net: Devnet, url: str) -> httpx.Response:
    from x402.http.clients.httpx import x402HttpxClient

    async with x402HttpxClient(sdk_client(net), timeout=90) as http:
        return await http.get(url)


# ------------------------------------------------------------------------------------------------ signatures


async def test_our_permit2_digest_is_the_sdk_typed_data_hash() -> None:
    """Same EIP-712 hash for the exact and upto witnesses as the SDK's typed data (eth_account)."""
    from eth_account.messages import encode_typed_data
    from x402.mechanisms.evm.constants import PERMIT2_WITNESS_TYPES, UPTO_PERMIT2_WITNESS_TYPES

    token, to, fac = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20
    for upto in (False, True):
        a = p2.Permit2Authorization("0x" + "44" * 20, token, 5_000, p2.UPTO_PROXY_ADDRESS if upto else
                                    p2.EXACT_PROXY_ADDRESS, 2**200 + 7, 1_900_000_000, to, 12,
                                    fac if upto else None)
        witness: dict[str, Any] = {"to": to, "validAfter": 12}
        if upto:
            witness = {"to": to, "facilitator": fac, "validAfter": 12}
        types = UPTO_PERMIT2_WITNESS_TYPES if upto else PERMIT2_WITNESS_TYPES
        full = {
            "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}], **types},
            "primaryType": "PermitWitnessTransferFrom",
            "domain": {"name": "Permit2", "chainId": 84532, "verifyingContract": p2.PERMIT2_ADDRESS},
            "message": {"permitted": {"token": token, "amount": 5_000}, "spender": a.spender, "nonce": a.nonce,
                        "deadline": a.deadline, "witness": witness},
        }
        msg = encode_typed_data(full_message=full)
        from eth_utils.crypto import keccak

        sdk_digest = keccak(b"\x19" + msg.version + msg.header + msg.body)
        assert a.digest(84532) == sdk_digest, f"{'upto' if upto else 'exact'} digest differs from the SDK's"


# ------------------------------------------------------------------------------------------------ SDK client → us


async def test_sdk_client_pays_our_seller_with_permit2_and_upto(env: Env) -> None:
    net = env.net
    payer0, payee0 = await env.balance(net.payer.address), await env.balance(net.payee.address)
    r1 = await sdk_get(net, env.url + "/article")
    assert r1.status_code == 200, r1.text
    r2 = await sdk_get(net, env.url + "/llm?cost=1500")
    assert r2.status_code == 200, r2.text
    assert await env.balance(net.payee.address) - payee0 == PRICE + 1500, "the payee's balance is off"
    assert payer0 - await env.balance(net.payer.address) == PRICE + 1500, "the payer paid more than charged"


# ------------------------------------------------------------------------------------------------ official server


def sdk_server(net: Devnet, facilitator_url: str, calls: list[str]) -> Any:
    """The SDK's FastAPI resource server: GET /article (exact, Permit2) and GET /llm (upto, charges 3000)."""
    from fastapi import FastAPI
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI, set_settlement_overrides
    from x402.http.types import RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmServerScheme
    from x402.mechanisms.evm.upto import UptoEvmServerScheme

    i = net.info
    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    server.register(i.network, ExactEvmServerScheme())
    server.register(i.network, UptoEvmServerScheme())
    extra = {"name": i.token_name, "version": i.token_version}
    routes = {
        "GET /article": RouteConfig(accepts=PaymentOption(
            scheme="exact", network=i.network, pay_to=net.payee.address, max_timeout_seconds=60,
            price={"amount": str(PRICE), "asset": i.token, "extra": {**extra, "assetTransferMethod": "permit2"}}),
            description="exact via Permit2", mime_type="application/json"),
        "GET /llm": RouteConfig(accepts=PaymentOption(
            scheme="upto", network=i.network, pay_to=net.payee.address, max_timeout_seconds=60,
            price={"amount": str(MAXIMUM), "asset": i.token, "extra": extra}),
            description="metered", mime_type="application/json"),
    }
    app = FastAPI()

    @app.get("/article")
    async def article() -> dict[str, bool]:
        calls.append("article")
        return {"ok": True}

    @app.get("/llm")
    async def llm(response: Response) -> dict[str, int]:
        calls.append("llm")
        set_settlement_overrides(response, {"amount": "3000"})
        return {"tokens": 3}

    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    app.middleware_stack = app.build_middleware_stack()  # runs the SDK's startup /supported call here
    return app


@contextlib.asynccontextmanager
async def official_server(env: Env, calls: list[str]) -> AsyncIterator[str]:
    app = await asyncio.to_thread(sdk_server, env.net, env.facilitator_url, calls)
    async with serve_asgi(app) as url:
        yield url


async def test_our_buyer_pays_the_official_server_through_our_facilitator(env: Env, tmp_path: Path) -> None:
    """The SDK server settles through our facilitator; our buyer pays exact/Permit2 and upto (3000 of 50000)."""
    net = env.net
    calls: list[str] = []
    wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
    payee0 = await env.balance(net.payee.address)
    policy = Policy(assets=[net.asset], max_per_payment="$0.10")
    async with official_server(env, calls) as url, x402_client(
            wallet, policy, store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        r1 = await client.get(url + "/article")
        r2 = await client.get(url + "/llm")
    assert (r1.status_code, r2.status_code) == (200, 200), (r1.text, r2.text)
    assert calls == ["article", "llm"], f"handlers ran {calls}"
    assert await env.balance(net.payee.address) - payee0 == PRICE + 3000, "the payee's balance is off"


async def test_sdk_client_pays_the_official_server_through_our_facilitator(env: Env) -> None:
    net = env.net
    calls: list[str] = []
    payee0 = await env.balance(net.payee.address)
    async with official_server(env, calls) as url:
        r = await sdk_get(net, url + "/llm")
    assert r.status_code == 200, r.text
    assert await env.balance(net.payee.address) - payee0 == 3000, "upto did not settle the overridden amount"


# ------------------------------------------------------------------------------------------------ SDK facilitator


async def test_sdk_facilitator_settles_our_upto_payment_on_our_contracts(env: Env) -> None:
    """The SDK's facilitator (web3.py over JSON-RPC) verifies and settles an upto payment our client signed,
    on our Permit2 and upto proxy: the settled amount moves, the maximum does not."""
    from x402 import x402FacilitatorSync
    from x402.http.utils import decode_payment_signature_header
    from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
    from x402.mechanisms.evm.upto import UptoEvmFacilitatorScheme
    from x402.schemas import PaymentRequirements as SdkRequirements

    net = env.net
    async with rpc_url(net) as rpc:
        signer = FacilitatorWeb3Signer(private_key=SDK_FACILITATOR_KEY, rpc_url=rpc, confirmation_timeout_seconds=30)
        fac = x402FacilitatorSync()
        fac.register([net.info.network], UptoEvmFacilitatorScheme(signer))
        sdk_address = Account.from_key(SDK_FACILITATOR_KEY).address
        req = PaymentRequirements(scheme="upto", network=net.info.network, amount=MAXIMUM, asset=net.info.token,
                                  pay_to=net.payee.address, max_timeout_seconds=120,
                                  extra={"facilitatorAddress": sdk_address, "assetTransferMethod": "permit2"})
        ours = PaymentPayload(accepted=req, payload=await UptoEvmClient(net.payer).create_payload(req))
        sdk_payload = decode_payment_signature_header(encode_payment_payload(ours))
        sdk_req = SdkRequirements.model_validate(req.to_wire())
        verdict = await asyncio.to_thread(fac.verify, sdk_payload, sdk_req)
        assert verdict.is_valid, f"the SDK facilitator refused our payload: {verdict.invalid_reason}"
        payee0 = await env.balance(net.payee.address)
        actual = sdk_req.model_copy(update={"amount": "2500"})
        settled = await asyncio.to_thread(fac.settle, sdk_payload, actual)
        assert settled.success, f"the SDK facilitator could not settle on our contracts: {settled.error_reason}"
        assert await env.balance(net.payee.address) - payee0 == 2500, "the settled amount did not move"


async def test_our_facilitator_kinds_include_upto_with_its_address(env: Env) -> None:
    rails = [EvmNetwork(env.net.info.network, env.net.chain, [TxSender(env.net.chain, env.net.facilitator.private_key)])]
    kinds = Facilitator(default_registry.facilitators_for(rails)).supported().kinds
    upto = [k for k in kinds if k.scheme == "upto" and k.x402_version == 2]
    assert upto and upto[0].extra == {"facilitatorAddress": env.net.facilitator.address}, kinds


# ------------------------------------------------------------------------------------------------ TypeScript


@pytest.mark.node
async def test_typescript_client_pays_our_seller_with_permit2_and_upto(env: Env) -> None:
    """@x402/fetch with @x402/evm's exact and upto clients (2.27.0) pays our seller: Permit2 and an upto
    request the handler charges 2222 of 50000."""
    import json

    from tests.node_peers import NODE_DIR, ensure_node_peers

    node = ensure_node_peers()
    net = env.net
    payee0 = await env.balance(net.payee.address)
    proc = await asyncio.create_subprocess_exec(
        node, "metered_fetch_client.mjs", net.info.payer_key, net.info.network, net.info.token,
        env.url + "/article", env.url + "/llm?cost=2222", cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    lines = out.decode().strip().splitlines()
    assert lines, f"the TS client printed nothing: {err.decode()}"
    results = json.loads(lines[-1])
    assert isinstance(results, list), results
    assert [r["status"] for r in results] == [200, 200], results
    assert results[1]["paymentResponse"]["amount"] == "2222", results[1]
    assert await env.balance(net.payee.address) - payee0 == PRICE + 2222, "the payee's balance is off"


@pytest.mark.node
async def test_our_buyer_pays_express_through_our_facilitator(env: Env, tmp_path: Path) -> None:
    """@x402/express (2.27.0) settles through our facilitator; our buyer pays exact/Permit2 and upto (the TS
    handler charges 1111 of 50000 with ``setSettlementOverrides``)."""
    import os

    from tests.node_peers import NODE_DIR, ensure_node_peers
    from tests.test_buyer_interop import node_server

    node = ensure_node_peers()
    net, i = env.net, env.net.info
    server_env = {**os.environ, "FACILITATOR_URL": env.facilitator_url, "NETWORK": i.network, "ASSET": i.token,
                  "PAY_TO": net.payee.address, "PRICE": str(PRICE), "MAXIMUM": str(MAXIMUM), "CHARGE": "1111",
                  "TOKEN_NAME": i.token_name, "TOKEN_VERSION": i.token_version}
    wallet = Wallet.from_key(i.payer_key, chains={i.network: net.chain})
    policy = Policy(assets=[net.asset], max_per_payment="$0.10")
    payee0 = await env.balance(net.payee.address)
    async with node_server(node, NODE_DIR / "metered_express_server.mjs", server_env) as url, x402_client(
            wallet, policy, store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        r1 = await client.get(url + "/article")
        r2 = await client.get(url + "/llm")
        calls = (await client.get(url + "/calls")).json()
    assert (r1.status_code, r2.status_code) == (200, 200), (r1.text, r2.text)
    assert calls == {"article": 1, "llm": 1}, calls
    assert await env.balance(net.payee.address) - payee0 == PRICE + 1111, "the payee's balance is off"


# ------------------------------------------------------------------------------------------------ gas sponsoring


async def test_sdk_client_without_an_approval_pays_with_an_eip2612_permit(env: Env) -> None:
    """eip2612GasSponsoring: our 402 for Permit2 offers declares the extension (our facilitator supports it);
    the SDK client of a payer who never approved Permit2 (and holds no ETH) signs an EIP-2612 permit; our
    facilitator sends it with the payment through the proxy's ``settleWithPermit``. Both schemes."""
    from x402 import x402Client
    from x402.http.clients.httpx import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSignerWithRPC
    from x402.mechanisms.evm.upto import UptoEvmClientScheme

    from paywire.evm.signer import LocalSigner
    from paywire.x402.codec import decode_payment_required

    net = env.net
    unpaid = await env.http.get(env.url + "/article")
    assert p2.EIP2612_GAS_SPONSORING in (decode_payment_required(unpaid.headers["payment-required"]).extensions
                                         or {}), "the 402 does not declare eip2612GasSponsoring"
    async with rpc_url(net) as rpc:
        for path, cost in (("/article", PRICE), ("/llm?cost=2468", 2468)):
            fresh = LocalSigner.generate()
            await net.mint(fresh.address, 1_000_000)
            signer = EthAccountSignerWithRPC(Account.from_key(fresh.private_key), rpc)
            client = x402Client()
            client.register(net.info.network, ExactEvmScheme(signer))
            client.register(net.info.network, UptoEvmClientScheme(signer))
            client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token}]})
            payee0 = await env.balance(net.payee.address)
            async with x402HttpxClient(client, timeout=90) as http:
                r = await http.get(env.url + path)
            assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
            assert await env.balance(net.payee.address) - payee0 == cost, f"{path}: the payee's balance is off"
            assert await env.balance(fresh.address) == 1_000_000 - cost, f"{path}: the payer's balance is off"
            assert await net.chain.get_balance(fresh.address) == 0, "the payer needed gas after all"
