"""A metered FastAPI app: ``upto`` — the payer authorizes at most $0.05 per request, the handler bills what the
request actually cost (here: $0.0002 per generated word), and only that moves on chain.

Run it against a local devnet (``paywire devnet`` places Permit2 and the x402 proxies on the chain and approves
Permit2 for its payer)::

    paywire devnet &  python examples/metered_app.py        # http://127.0.0.1:8000, self-facilitating

Then ``paywire pay 'http://127.0.0.1:8000/complete?words=25'`` pays $0.005 of the $0.05 it authorized.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from paywire.devnet import DevnetInfo
from paywire.facilitator.client import FacilitatorClient
from paywire.server import KNOWN_ASSETS, AssetRegistry, Offer, bill, self_facilitator
from paywire.server.fastapi import install, paid

PER_WORD = 200  # atomic units of a 6-decimals token: $0.0002


def create_app(info: DevnetInfo, facilitator: FacilitatorClient | str, *, store: str | None = None) -> FastAPI:
    """The app, priced in the devnet's token and paid to its payee."""
    app = FastAPI(title="paywire metered example")

    @app.get("/complete")
    @paid(offers=(Offer("$0.05", scheme="upto"),), description="Text completion, billed per word")
    async def complete(request: Request, words: int = 10) -> dict[str, Any]:
        text = " ".join(["lorem"] * max(0, min(words, 250)))
        cost = bill(request, PER_WORD * len(text.split()))  # at most the $0.05 the payer signed
        return {"text": text, "billed": cost}

    install(app, facilitator, pay_to=info.addresses["payee"], network=info.network,
            assets=AssetRegistry((*KNOWN_ASSETS, info.asset)), store=store, app_name="paywire metered example")
    return app


def main() -> None:
    import uvicorn

    path = Path(os.environ.get("PAYWIRE_DEVNET", "devnet.json"))  # written by `paywire devnet`
    info = DevnetInfo(**json.loads(path.read_text()))
    url = os.environ.get("PAYWIRE_FACILITATOR")
    if url is None and info.rpc_url is None:
        raise SystemExit("devnet.json has no rpc_url: run `paywire devnet` (it serves JSON-RPC) first")
    facilitator = url or self_facilitator(str(info.rpc_url), info.facilitator_key)
    uvicorn.run(create_app(info, facilitator), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
