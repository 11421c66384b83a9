"""A paid FastAPI app: x402 prices on the endpoints, settled exactly once.

Run it against a local devnet, in one command (after ``paywire devnet`` has written ``devnet.json``)::

    paywire devnet &  python examples/fastapi_app.py        # http://127.0.0.1:8000, self-facilitating

With a separate facilitator service instead (``paywire facilitator --rpc … --key …``)::

    PAYWIRE_FACILITATOR=http://127.0.0.1:4020 python examples/fastapi_app.py

Then pay for it with no flags: ``paywire pay http://127.0.0.1:8000/weather`` (``paywire devnet`` left a profile
with the devnet's payer), or open it in a browser with a wallet. Its ledger is ``./paywire.db`` (where you run
it; ``paywire sales`` there shows the sales).
``GET /`` is free; ``/weather`` costs $0.01 (settled after the handler succeeds); ``/report`` costs $0.05
and is settled *before* the handler runs (for expensive work) — its handler receives the payment details.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI

from paywire.devnet import DevnetInfo
from paywire.facilitator.client import FacilitatorClient
from paywire.server import KNOWN_ASSETS, AssetRegistry, self_facilitator
from paywire.server.fastapi import PaymentInfo, charge, install, paid


def load_devnet(path: str | os.PathLike[str] | None = None, wait: float = 120.0) -> DevnetInfo:
    """The state file ``paywire devnet`` writes (``$PAYWIRE_DEVNET`` or ./devnet.json), once its chain answers."""
    p = Path(path or os.environ.get("PAYWIRE_DEVNET", "devnet.json"))
    deadline = time.monotonic() + wait
    while True:
        try:
            info = DevnetInfo(**json.loads(p.read_text()))
            if info.rpc_url is None or httpx.post(info.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method":
                                                                       "eth_chainId", "params": []}).is_success:
                return info
        except (OSError, ValueError, TypeError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no running devnet described by {p}: start `paywire devnet` first")
        time.sleep(0.5)


REPORT = charge("$0.05", settle="before", description="Market report")  # price + the payment, as a dependency


def create_app(info: DevnetInfo, facilitator: FacilitatorClient | str, *, store: str | None = None) -> FastAPI:
    """The app, priced in the devnet's token and paid to its payee."""
    app = FastAPI(title="paywire FastAPI example")

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {"free": True, "paid": ["/weather", "/report"]}

    @app.get("/weather")
    @paid("$0.01", description="Current weather")
    async def weather() -> dict[str, Any]:
        return {"city": "Lisbon", "temperature_c": 21, "sky": "clear"}

    @app.get("/report")
    async def report(payment: Annotated[PaymentInfo, Depends(REPORT)]) -> dict[str, Any]:
        return {"report": "markets are up", "paid_by": payment.payer, "transaction": payment.transaction}

    install(app, facilitator, pay_to=info.addresses["payee"], network=info.network,
            assets=AssetRegistry((*KNOWN_ASSETS, info.asset)), store=store, app_name="paywire FastAPI example")
    return app


def main() -> None:
    import uvicorn

    info = load_devnet()
    url = os.environ.get("PAYWIRE_FACILITATOR")
    if url is None and info.rpc_url is None:
        raise SystemExit("devnet.json has no rpc_url: run `paywire devnet` (it serves JSON-RPC) first")
    facilitator = url or self_facilitator(str(info.rpc_url), info.facilitator_key)  # one line: in-process
    uvicorn.run(create_app(info, facilitator), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
