"""``erc20ApprovalGasSponsoring`` on the embedded chain with our Permit2 and proxies: a payer holding tokens but no
ETH and no Permit2 approval signs ``approve(Permit2, MAX)`` as a raw transaction; our facilitator (over HTTP)
funds exactly the gas it lacks, relays it, then settles through Permit2. Malformed or overpriced approvals are
refused before anything is funded (balances in tokens and ETH asserted)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.evm import approval_tx as at
from paywire.evm import permit2 as p2
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact.client import ExactEvmClient
from paywire.schemes.evm_upto.client import UptoEvmClient
from paywire.schemes.registry import default_registry
from paywire.serving import serve_asgi
from paywire.x402.models import PaymentPayload, PaymentRequirements

pytestmark = pytest.mark.asyncio(loop_scope="module")
DECLARED = {at.ERC20_APPROVAL_GAS_SPONSORING: {"info": {"description": "relayed", "version": "1"}}}
AMOUNT = 25_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[tuple[Devnet, HttpFacilitatorClient]]:
    net = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve_asgi(create_app(Facilitator(
            default_registry.facilitators_for(rails)))))
        client = HttpFacilitatorClient(url, timeout=60)
        yield net, client
        await client.aclose()
    await net.chain.aclose()


def offer(net: Devnet, scheme: str = "exact", extra: dict[str, Any] | None = None) -> PaymentRequirements:
    base: dict[str, Any] = {"assetTransferMethod": "permit2"}
    if scheme == "upto":
        base["facilitatorAddress"] = net.facilitator.address
    return PaymentRequirements(scheme=scheme, network=net.info.network, amount=AMOUNT, asset=net.info.token,
                               pay_to=net.payee.address, max_timeout_seconds=300, extra={**base, **(extra or {})})


async def stranger(net: Devnet) -> LocalSigner:
    s = LocalSigner.generate()
    await net.mint(s.address, 1_000_000)
    return s


async def payment(net: Devnet, payer: LocalSigner, req: PaymentRequirements,
                  extensions: Any = None) -> PaymentPayload:
    scheme = UptoEvmClient(payer) if req.scheme == "upto" else ExactEvmClient(payer)

    async def chain_for(_network: str) -> Any:
        return net.chain

    scheme.use_chains(chain_for)
    ext = extensions if extensions is not None else await scheme.payload_extensions(req, DECLARED)
    return PaymentPayload(accepted=req, payload=await scheme.create_payload(req), extensions=ext)


async def test_supported_lists_the_extension(env: Any) -> None:
    _net, fac = env
    assert at.ERC20_APPROVAL_GAS_SPONSORING in (await fac.supported()).extensions


@pytest.mark.parametrize("scheme", ["exact", "upto"])
async def test_a_payer_without_gas_or_approval_pays_through_the_relayed_approval(env: Any, scheme: str) -> None:
    net, fac = env
    payer = await stranger(net)
    req = offer(net, scheme)
    p = await payment(net, payer, req)
    assert p.extensions and at.ERC20_APPROVAL_GAS_SPONSORING in p.extensions, "no approval was signed"
    assert await net.chain.get_balance(payer.address) == 0
    verdict = await fac.verify(p, req)
    assert verdict.is_valid, verdict
    assert await net.chain.get_balance(payer.address) == 0, "verify funded the payer"
    payee0, fac0 = await net.token_balance(net.payee.address), await net.chain.get_balance(net.facilitator.address)
    tx = at.decode_approval(bytes.fromhex(p.extensions[at.ERC20_APPROVAL_GAS_SPONSORING]["info"]
                                          ["signedTransaction"][2:]))
    res = await fac.settle(p, req)
    assert res.success, res
    assert await net.token_balance(net.payee.address) - payee0 == AMOUNT
    allowance = int.from_bytes(await net.chain.call(net.info.token, p2.allowance(payer.address)), "big")
    assert allowance == at.MAX_UINT256, "the approval did not land"
    left = await net.chain.get_balance(payer.address)
    assert 0 <= left < tx.cost, "the payer was funded more than its approval's gas"
    spent = fac0 - await net.chain.get_balance(net.facilitator.address)
    assert spent <= tx.cost + 21_000 * tx.max_fee + 400_000 * tx.max_fee, f"the facilitator spent {spent} wei"
    payee1 = await net.token_balance(net.payee.address)
    await fac.settle(p, req)  # a replay: nothing moves twice and nothing is funded again
    assert await net.token_balance(net.payee.address) == payee1
    assert await net.chain.get_balance(payer.address) == left


async def test_bad_approvals_are_refused_before_anything_is_funded(env: Any) -> None:
    net, fac = env
    payer = await stranger(net)
    req = offer(net)
    chain_id = await net.chain.chain_id()

    async def signed(spender: str = p2.PERMIT2_ADDRESS, max_fee: int = 2 * 10**9, nonce: int = 0,
                     gas: int = 60_000, to: str | None = None) -> dict[str, Any]:
        data = at.approve_calldata(spender, at.MAX_UINT256)
        target = to or net.info.token
        sig = await payer.sign_digest(at.approval_sighash(chain_id, nonce, 10**9, max_fee, gas, target, data))
        raw = at.encode_approval(chain_id, nonce, 10**9, max_fee, gas, target, data, sig)
        return at.approval_extension(payer.address, net.info.token, at.MAX_UINT256, raw)

    cases = {
        "erc20_approval_tx_wrong_spender": await signed(spender=net.payee.address),
        "erc20_approval_tx_fee_too_high": await signed(max_fee=10**15),
        "erc20_approval_tx_nonce_mismatch": await signed(nonce=5),
        "erc20_approval_tx_gas_out_of_bounds": await signed(gas=5_000_000),
        "erc20_approval_tx_wrong_target": await signed(to=net.payee.address),
    }
    other = await stranger(net)
    forged = dict(await signed())
    forged[at.ERC20_APPROVAL_GAS_SPONSORING] = {"info": {**forged[at.ERC20_APPROVAL_GAS_SPONSORING]["info"],
                                                         "from": other.address}}
    for reason, ext in cases.items():
        p = await payment(net, payer, req, extensions=ext)
        verdict = await fac.verify(p, req)
        assert (verdict.is_valid, verdict.invalid_reason) == (False, reason), (reason, verdict)
        res = await fac.settle(p, req)
        assert not res.success and res.error_reason == reason, (reason, res)
    p = await payment(net, payer, req, extensions=forged)
    assert (await fac.verify(p, req)).invalid_reason == "erc20_approval_from_mismatch"
    assert await net.chain.get_balance(payer.address) == 0, "a refused approval was funded"
    assert await net.token_balance(payer.address) == 1_000_000, "a refused approval moved tokens"


@pytest.mark.interop
async def test_the_official_sdks_signed_approval_is_relayed_and_settled(env: Any) -> None:
    """``x402==2.25.0``'s own ``sign_erc20_approval_transaction`` (unmodified) builds the extension; our
    facilitator verifies it, funds the gas, relays it and settles."""
    from eth_account import Account
    from x402.extensions.erc20_approval_gas_sponsoring.client import sign_erc20_approval_transaction

    net, fac = env
    payer = await stranger(net)
    account = Account.from_key(payer.private_key)
    nonce = await net.chain.get_transaction_count(payer.address, "pending")
    fees = await net.chain.fee_data()

    class SdkSigner:  # the interface the SDK's helper documents, over eth_account
        address = account.address

        def get_transaction_count(self, _address: str) -> int:
            return nonce

        def estimate_fees_per_gas(self) -> tuple[int, int]:
            return 2 * fees.base_fee + fees.max_priority_fee, fees.max_priority_fee

        def sign_transaction(self, tx: dict[str, Any]) -> str:
            return "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()

    info = sign_erc20_approval_transaction(SdkSigner(), net.info.token, await net.chain.chain_id())
    req = offer(net)
    p = await payment(net, payer, req, extensions={at.ERC20_APPROVAL_GAS_SPONSORING: {"info": info.to_dict()}})
    verdict = await fac.verify(p, req)
    assert verdict.is_valid, verdict
    payee0 = await net.token_balance(net.payee.address)
    res = await fac.settle(p, req)
    assert res.success, res
    assert await net.token_balance(net.payee.address) - payee0 == AMOUNT
    assert int.from_bytes(await net.chain.call(net.info.token, p2.allowance(payer.address)), "big") > 0


# ------------------------------------------------------------------------------------------------ our seller


@contextlib.asynccontextmanager
async def seller(net: Devnet, facilitator_url: str, tmp: Any) -> AsyncIterator[str]:
    """Our seller on 127.0.0.1 settling through ``facilitator_url``: GET /permit2 (exact via Permit2), GET /upto
    (upto, at most ``AMOUNT``) and GET /plain (exact via EIP-3009, no Permit2)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.server.pricing import Offer

    async def ok(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("served")

    a = net.asset
    routes = [PaidRoute("GET /permit2", offers=(Offer(price=AMOUNT, asset=a, extra={"assetTransferMethod": "permit2"}),)),
              PaidRoute("GET /upto", offers=(Offer(price=AMOUNT, asset=a, scheme="upto"),)),
              PaidRoute("GET /plain", offers=(Offer(price=AMOUNT, asset=a),))]
    app = Starlette(routes=[Route(p, ok) for p in ("/permit2", "/upto", "/plain")])
    mw = PaymentMiddleware(app, routes, HttpFacilitatorClient(facilitator_url), pay_to=net.payee.address,
                           network=net.info.network, store=f"sqlite:///{tmp / 'seller.db'}",
                           assets=AssetRegistry((*KNOWN_ASSETS, a)))
    try:
        async with serve_asgi(mw) as url:
            yield url
    finally:
        await mw.flow.aclose()


async def declared(url: str) -> dict[str, Any]:
    import httpx

    from paywire.x402.codec import decode_payment_required

    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(url)
    assert r.status_code == 402, r.text
    return dict(decode_payment_required(r.headers["payment-required"]).extensions or {})


async def test_our_seller_declares_the_extension_for_permit2_routes(env: Any, tmp_path: Any) -> None:
    """Our facilitator sponsors approvals, so our seller's 402 of a Permit2 route (exact/Permit2, upto) carries
    ``erc20ApprovalGasSponsoring`` with the spec's schema; an EIP-3009 route's 402 does not."""
    net, fac = env
    async with seller(net, fac.url, tmp_path) as url:
        for path in ("/permit2", "/upto"):
            ext = (await declared(url + path)).get(at.ERC20_APPROVAL_GAS_SPONSORING)
            assert ext is not None, f"{path}: the 402 does not declare erc20ApprovalGasSponsoring"
            assert ext["info"]["version"] == "1"
            assert set(ext["schema"]["required"]) == {"from", "asset", "spender", "amount", "signedTransaction",
                                                      "version"}
        assert at.ERC20_APPROVAL_GAS_SPONSORING not in await declared(url + "/plain")


@pytest.mark.parametrize("path", ["/permit2", "/upto"])
async def test_our_buyer_pays_through_the_approval_our_seller_declares(env: Any, tmp_path: Any, path: str) -> None:
    """A facilitator that sponsors approvals but not EIP-2612 permits (as for a token without ``permit``): our
    seller declares only ``erc20ApprovalGasSponsoring``, and our buyer — tokens, no ETH, no Permit2 approval —
    pays with a signed ``approve(Permit2, MAX)`` the facilitator funds and relays: the payee gets the price,
    the allowance is set, the payer was funded no more than the approval's gas."""
    from paywire.client import Policy, x402_client
    from paywire.wallet import Wallet

    net, _ = env
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    plugins = default_registry.facilitators_for(rails)
    for p in plugins:  # this facilitator lists (and so the seller declares) only the relayed approval
        if p2.EIP2612_GAS_SPONSORING in getattr(p, "extensions", ()):
            p.extensions = (at.ERC20_APPROVAL_GAS_SPONSORING,)  # type: ignore[attr-defined]
    payer = await stranger(net)
    async with serve_asgi(create_app(Facilitator(plugins))) as fac_url, seller(net, fac_url, tmp_path) as url:
        ext = await declared(url + path)
        assert at.ERC20_APPROVAL_GAS_SPONSORING in ext and p2.EIP2612_GAS_SPONSORING not in ext, ext
        wallet = Wallet.from_key(payer.private_key, chains={net.info.network: net.chain})
        payee0 = await net.token_balance(net.payee.address)
        async with x402_client(wallet, Policy(assets=[net.asset], max_per_payment="$0.10"),
                               store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
            r = await client.get(url + path)
        assert r.status_code == 200, r.text
    assert await net.token_balance(net.payee.address) - payee0 == AMOUNT, "the payee was not paid the price"
    allowance = int.from_bytes(await net.chain.call(net.info.token, p2.allowance(payer.address)), "big")
    assert allowance == at.MAX_UINT256, "the buyer's relayed approval did not land"
    assert await net.chain.get_transaction_count(payer.address, "latest") == 1, "the payer sent other than the approval"
    fees = await net.chain.fee_data()
    most = at.APPROVAL_GAS * 2 * (2 * fees.base_fee + fees.max_priority_fee)  # the facilitator's funding bound
    assert await net.chain.get_balance(payer.address) < most, "the payer was funded beyond its approval's gas"
