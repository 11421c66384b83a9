"""A token known only by its address: its EIP-712 domain is read from the chain (ERC-5267 ``eip712Domain()``,
else ``name()``/``version()``), on the embedded chain against real contracts; a seller's ``$`` price in such a
token is paid end to end (issue 11, item 13)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import pytest_asyncio
from eth_abi.abi import encode as abi_encode

from paywire.chain import JsonRpcServer
from paywire.chain.token_domain import chain_assets, read_asset, read_token_domain
from paywire.chain.tx import TxSender
from paywire.client import Buyer, PaymentTransport, settlement_of
from paywire.client.policy import Policy
from paywire.errors import ConfigError
from paywire.evm.artifacts import load_artifact
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, content_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rpc(net):
    server = JsonRpcServer(net.chain.transport)
    url = await asyncio.to_thread(server.start)
    yield url
    await asyncio.to_thread(server.stop)


async def deploy(net, name: str, args: bytes) -> str:
    art = load_artifact(name)
    return await TxSender(net.chain, net.deployer.private_key).deploy(art.bytecode, args)


async def test_domain_of_an_erc5267_token_comes_from_eip712domain(net) -> None:
    """PaywireToken implements ERC-5267: name, version, chain id and contract come from eip712Domain()."""
    domain = await read_token_domain(net.chain, net.info.token)
    assert domain.source == "eip5267", "eip712Domain() was not used for an ERC-5267 token"
    assert (domain.name, domain.version) == ("USD Coin", "2"), f"wrong domain read: {domain}"
    assert domain.chain_id == 31337, "chain id not taken from the domain"
    assert domain.verifying_contract is not None
    assert domain.verifying_contract.lower() == net.info.token.lower(), "verifying contract is not the token"


async def test_domain_of_a_token_without_erc5267_falls_back_to_name_and_version(net) -> None:
    """NameVersionToken has name()/version() but no eip712Domain(): the reader falls back to them."""
    address = await deploy(net, "NameVersionToken", abi_encode(["string", "string"], ["Old Dollar", "7"]))
    domain = await read_token_domain(net.chain, address)
    assert domain.source == "name/version", "the fallback path was not taken"
    assert (domain.name, domain.version) == ("Old Dollar", "7"), f"wrong domain read: {domain}"
    asset = await read_asset(net.chain, address)
    assert (asset.network, asset.decimals, asset.symbol) == ("eip155:31337", 6, "NVT"), asset


async def test_a_contract_that_is_no_token_gives_a_clear_error(net) -> None:
    """A contract answering neither (a smart wallet) and an address without code: ConfigError naming it."""
    wallet = await deploy(net, "TestSmartWallet", abi_encode(["address"], [net.payer.address]))
    for address in (wallet, net.payee.address):
        with pytest.raises(ConfigError, match=address):
            await read_token_domain(net.chain, address)


async def test_read_asset_refuses_another_network(net) -> None:
    with pytest.raises(ConfigError, match="eip155:8453"):
        await read_asset(net.chain, net.info.token, network="eip155:8453")


async def test_registry_without_a_node_still_refuses_an_unknown_token(net) -> None:
    """Without a lookup the old, clear refusal stays (and names the way to give a node)."""
    with pytest.raises(ConfigError, match="chain_assets"):
        AssetRegistry().resolve("eip155:31337", net.info.token, money=True, price="$0.01")


async def test_seller_dollar_price_in_a_token_given_by_address_is_paid(net, rpc, tmp_path) -> None:
    """A seller prices '$0.01' in a token it knows only by address on a chain without a registry entry
    (``assets=chain_assets(rpc)``); the 402 carries the domain read from the chain and a buyer pays it."""
    from paywire.server import Offer, PaidRoute, PaymentMiddleware

    route = PaidRoute("/weather", offers=(Offer("$0.01", asset=net.info.token, network=net.info.network),))
    app = PaymentMiddleware(content_app(), [route], LocalFacilitatorClient(_facilitator(net)),
                            pay_to=net.payee.address, assets=chain_assets(rpc),
                            store=f"sqlite:///{tmp_path / 'seller.db'}")
    before = await balance(net, net.payee.address)
    buyer = Buyer(Wallet.from_key(net.payer.private_key), Policy(), store=None)
    async with serve_asgi(app) as url, httpx.AsyncClient(transport=PaymentTransport(buyer), timeout=60) as http:
        r = await http.get(url + "/weather")
    assert r.status_code == 200, r.text
    s = settlement_of(r)
    assert s is not None and s.success, "no successful settlement header"
    assert await balance(net, net.payee.address) == before + CENT, "the payee did not receive $0.01"


def _facilitator(net):
    from paywire.facilitator.core import Facilitator

    return Facilitator([facilitator_for(net)])


async def test_pay_asset_by_address_pays_an_mpp_evm_charge_route(net, rpc, tmp_path) -> None:
    """`paywire pay --asset <address>`: the CLI reads the token's EIP-712 domain from the chain, so an MPP
    ``evm/charge`` route (which carries no domain) is paid end to end; balances move on chain."""
    import json
    import os
    import sys

    from paywire.server import Offer, PaidRoute, PaymentMiddleware

    route = PaidRoute("GET /mpp", offers=(Offer(CENT, asset=net.asset),), mpp=("evm",))
    app = PaymentMiddleware(content_app(), [route], LocalFacilitatorClient(_facilitator(net)),
                            pay_to=net.payee.address, assets=AssetRegistry((net.asset,)), mpp_realm="shop.test",
                            mpp_secret=os.urandom(32), store=f"sqlite:///{tmp_path / 'seller.db'}")
    policy = tmp_path / "mpp-only.json"
    policy.write_text(json.dumps({"protocols": ["mpp"], "max_per_payment": "$0.05"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWIRE_")}
    env.update(HOME=str(tmp_path), COLUMNS="200", PAYWIRE_WALLET_KEY=net.info.payer_key, PAYWIRE_RPC=rpc,
               PAYWIRE_STORE=f"sqlite:///{tmp_path / 'buyer.db'}")
    before = await balance(net, net.payee.address)
    async with serve_asgi(app) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "paywire.cli.main", "pay", url + "/mpp", "--asset", net.info.token, "--yes",
            "--policy", str(policy), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["content"] == "paid content", "the paid body is not on stdout"
    assert re.search(r"protocol\s*│\s*mpp", err.decode()), f"the receipt shows no MPP payment: {err.decode()}"
    assert await balance(net, net.payee.address) == before + CENT, "the payee did not receive $0.01"


async def test_a_node_that_does_not_answer_is_a_config_error_naming_the_token(net, unused_tcp_port) -> None:
    """A seller whose token node is down fails at startup with a ConfigError naming the token, no traceback
    from deep inside the chain client."""
    assets = chain_assets({"eip155:31337": f"http://127.0.0.1:{unused_tcp_port}"})
    with pytest.raises(ConfigError, match=net.info.token):
        assets.resolve("eip155:31337", net.info.token, money=True, price="$0.01")
