"""``paywire demo``: an offline, end-to-end purchase on a real (embedded) EVM with real EIP-3009 settlement."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.client.core import Payer
from paywire.client.httpx_transport import PaymentTransport, receipt_of, settlement_of
from paywire.devnet import Devnet, setup_devnet
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.registry import default_registry
from paywire.server import Offer, PaidRoute
from paywire.server.asgi import PaymentMiddleware
from paywire.serving import serve_asgi

if TYPE_CHECKING:
    from paywire.cli.output import Steps

AUDIT_INSTANCE = "demo-seller-1"
AUDIT_ORIGIN = "paywire.demo/seller"
CATALOGUE = (("/weather", "$0.01", "Current weather"), ("/joke", "$0.005", "A joke"),
             ("/report", "$0.05", "Market report"))


@dataclass(frozen=True, slots=True)
class Purchase:
    path: str
    price: int
    status: int
    tx: str
    payer_before: int
    payer_after: int
    payee_before: int
    payee_after: int


def paid_api(net: Devnet, facilitator_url: str, store_url: str, audit: str | None = None) -> PaymentMiddleware:
    """A small API with three priced routes, settled through the facilitator over HTTP (``audit``: its name in
    the audit log; every ledger change then queues an audit event)."""

    async def handler(request: Request) -> JSONResponse:
        return JSONResponse({"path": request.url.path, "data": f"paid content for {request.url.path}",
                             "at": int(time.time())})

    app = Starlette(routes=[Route(path, handler) for path, _, _ in CATALOGUE])
    routes = [PaidRoute(path=p, description=d, offers=(Offer(price, pay_to=net.payee.address, asset=net.asset),))
              for p, price, d in CATALOGUE]
    return PaymentMiddleware(app, routes, HttpFacilitatorClient(facilitator_url), store=store_url, audit=audit)


def usdc(atomic: int) -> str:
    return f"{atomic / 1_000_000:,.3f}".rstrip("0").rstrip(".") if atomic else "0"


def _short(tx: str) -> str:
    return f"{tx[:8]}…{tx[-4:]}" if tx else "-"


async def run_demo(console: Console | None = None, *, purchases: int = 3, steps: Steps | None = None
                   ) -> list[Purchase]:
    """Run the whole exchange; returns the purchases (each settled on chain). ``steps`` shows progress."""
    out = console or Console()
    step = steps.step if steps is not None else (lambda _text: None)
    workdir = tempfile.mkdtemp(prefix="paywire-demo-")
    step("starting the embedded chain")
    chain_backend = EmbeddedChain(chain_id=31337)
    chain = RpcChain(chain_backend)
    try:
        net = await setup_devnet(chain, on_step=step)
        facilitator = Facilitator(default_registry.facilitators_for(
            [EvmNetwork(net.info.network, chain, [TxSender(chain, net.facilitator.private_key)])]))
        step("starting the facilitator and the paid API")
        async with serve_asgi(create_app(facilitator)) as fac_url:
            api = paid_api(net, fac_url, f"sqlite:///{workdir}/seller.db", AUDIT_INSTANCE)
            async with serve_asgi(api) as api_url:
                if steps is not None:
                    steps.done()
                out.print(f"[bold]chain[/] {net.info.network} (embedded py-evm)")
                out.print(f"[bold]token[/] {net.info.token} ({net.info.token_name} v{net.info.token_version})")
                out.print(f"[bold]facilitator[/] {fac_url}   [bold]paid API[/] {api_url}")
                payer = Payer(default_registry.clients_for(LocalSigner(net.payer.private_key)))
                results: list[Purchase] = []
                async with httpx.AsyncClient(transport=PaymentTransport(payer), timeout=60) as agent:
                    for i in range(purchases):
                        path, _, _ = CATALOGUE[i % len(CATALOGUE)]
                        pb = await net.token_balance(net.payer.address)
                        qb = await net.token_balance(net.payee.address)
                        r = await agent.get(api_url + path)
                        s = settlement_of(r)
                        pa = await net.token_balance(net.payer.address)
                        qa = await net.token_balance(net.payee.address)
                        results.append(Purchase(path, pb - pa, r.status_code, s.transaction if s else "", pb, pa, qb,
                                                qa))
            try:
                table = Table(title="purchases settled on chain (USDC)")
                for col in ("resource", "HTTP", "price", "tx hash", "payer balance", "payee balance"):
                    table.add_column(col, no_wrap=True)
                for p in results:
                    table.add_row(p.path, str(p.status), usdc(p.price), _short(p.tx),
                                  f"{usdc(p.payer_after)} (-{usdc(p.payer_before - p.payer_after)})",
                                  f"{usdc(p.payee_after)} (+{usdc(p.payee_after - p.payee_before)})")
                out.print(table)
                settled = [p for p in results if p.tx]
                if settled:
                    await show_audit(out, api, settled[0])
            finally:
                await api.flow.aclose()
        return results
    finally:
        await chain.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


async def show_audit(out: Console, api: PaymentMiddleware, purchase: Purchase) -> None:
    """Sequence the seller's audit events, print the signed checkpoint, and verify an inclusion proof of one
    purchase against the log's public key (docs/audit.md); raises if anything does not verify."""
    from paywire.audit.note import Signer
    from paywire.audit.ops import prove_subject, verify_store
    from paywire.audit.proofs import verify_proof
    from paywire.audit.sequencer import Sequencer
    from paywire.audit.store import AuditStore

    store = AuditStore(api.flow.payments.db)
    key = Signer.generate(AUDIT_ORIGIN)  # a production log loads its key: paywire audit keygen, PAYWIRE_AUDIT_KEY
    seq = Sequencer(store, key)
    await seq.drain()
    await seq.integrate(force_checkpoint=True)
    note = await store.checkpoint()
    if note is None:
        raise RuntimeError("the audit sequencer signed no checkpoint")
    out.print(f"[bold]audit log[/] {AUDIT_ORIGIN}: {await store.size()} events, checkpoint:")
    out.print(note.rstrip("\n"), markup=False, highlight=False)
    proofs = await prove_subject(store, purchase.tx)
    if not proofs:
        raise RuntimeError(f"no audit event names the purchase's transaction {purchase.tx}")
    proof = proofs[-1]
    proven = verify_proof(proof.text(), proof.entry, [key.verifier])
    out.print(f"[bold]inclusion proof[/] {purchase.path} (tx {_short(purchase.tx)}): entry {proven.index} is in the "
              f"signed tree of size {proven.checkpoint.size} [green]verified[/] with {key.verifier.vkey}",
              highlight=False)
    report = await verify_store(store, [key.verifier])
    if not report.ok:
        raise RuntimeError(f"audit verify failed: {report.first()}")
    out.print(f"[bold]audit verify[/] [green]OK[/]: {report.size} entries, every ledger row matches its latest event")


@dataclass(frozen=True, slots=True)
class LightningPurchase:
    n: int
    status: int
    paid_sat: int
    payer_after_sat: int
    payment_hash: str


async def run_lightning_demo(console: Console | None = None, *, requests: int = 3,
                             sats: int = 21) -> list[LightningPurchase]:
    """An L402 purchase on a real LNbits (FakeWallet funding source, started here in its own virtualenv):
    the first request pays the invoice, the next ones reuse the paid token."""
    import os
    from pathlib import Path

    from paywire.client.engine import Buyer
    from paywire.client.policy import Policy
    from paywire.lightning.lnbits import LnbitsBackend
    from paywire.lightning.lnbits_dev import DEFAULT_VENV, LnbitsDev, _has_lnbits

    out = console or Console()
    workdir = tempfile.mkdtemp(prefix="paywire-ln-demo-")
    venv = Path(os.environ.get("PAYWIRE_LNBITS_VENV", str(DEFAULT_VENV))).absolute()
    first_run = not _has_lnbits(venv)
    node = LnbitsDev(venv=venv, payer_sats=10_000)
    try:
        msg = (f"installing LNbits into {venv} (first run only; this takes a few minutes)" if first_run
               else "starting LNbits (FakeWallet funding source)")
        with out.status(msg):
            await node.start()
        assert node.payer is not None and node.payee is not None
        out.print(f"[bold]LNbits[/] {node.url}  payer wallet funded with 10,000 sat")
        payee = LnbitsBackend(node.url, invoice_key=node.payee.invoice_key)
        payer = LnbitsBackend(node.url, admin_key=node.payer.admin_key)

        async def weather(request: Request) -> JSONResponse:
            return JSONResponse({"forecast": "sunny", "token_id": request.state.payment.payer[:12]})

        app = Starlette(routes=[Route("/weather", weather)])
        mw = PaymentMiddleware(app, [PaidRoute("GET /weather", l402="weather", sats=sats,
                                               description="Weather behind L402")],
                               "http://127.0.0.1:9",  # no x402 route: the facilitator is never asked
                               store=f"sqlite:///{workdir}/seller.db", lightning=payee)
        buyer = Buyer([], Policy(max_per_payment="$1", btc_usd="$100000", protocols=("l402",)),
                      account="0x" + "00" * 20, lightning=payer)
        results: list[LightningPurchase] = []
        async with serve_asgi(mw) as api_url, httpx.AsyncClient(transport=PaymentTransport(buyer),
                                                                 timeout=60) as agent:
            out.print(f"[bold]paid API[/] {api_url}/weather  ({sats} sat, L402)")
            for i in range(requests):
                before = await node.balance_msat(node.payer)
                r = await agent.get(api_url + "/weather")
                after = await node.balance_msat(node.payer)
                receipt = receipt_of(r)
                ph = (receipt.tx if receipt is not None else None) or ""
                results.append(LightningPurchase(i + 1, r.status_code, (before - after) // 1000, after // 1000, ph))
        await mw.flow.aclose()
        await payer.aclose()
        await payee.aclose()
        table = Table(title="L402 purchases (Lightning, LNbits FakeWallet)")
        for col in ("request", "HTTP", "paid (sat)", "payer balance (sat)", "what happened"):
            table.add_column(col, no_wrap=True)
        for p in results:
            what = "paid invoice, got token" if p.paid_sat else "reused the paid token"
            table.add_row(str(p.n), str(p.status), str(p.paid_sat), f"{p.payer_after_sat:,}", what)
        out.print(table)
        return results
    finally:
        await node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
