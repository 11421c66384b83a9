"""A paid Flask app (WSGI): same middleware core as the ASGI one, settled exactly once.

Run it against a local devnet, in one command (after ``paywire devnet`` has written ``devnet.json``)::

    paywire devnet &  python examples/flask_app.py          # http://127.0.0.1:8001, self-facilitating

With a separate facilitator service instead::

    PAYWIRE_FACILITATOR=http://127.0.0.1:4020 python examples/flask_app.py

``GET /`` is free; ``/weather`` costs $0.01 (settled after the view succeeds); ``/report`` costs $0.05, is
settled before the view runs and streams its answer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from flask import Flask, Response, jsonify, request

from paywire.devnet import DevnetInfo
from paywire.facilitator.client import FacilitatorClient
from paywire.server import KNOWN_ASSETS, AssetRegistry, PaidRoute, WsgiPaymentMiddleware, self_facilitator


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


ROUTES = [
    PaidRoute("GET /weather", price="$0.01", description="Current weather"),
    PaidRoute("GET /report", price="$0.05", description="Market report", settle="before", mime_type="text/plain"),
]


def create_app(info: DevnetInfo, facilitator: FacilitatorClient | str, *, store: str | None = None) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> Response:
        return jsonify(free=True, paid=["/weather", "/report"])

    @app.get("/weather")
    def weather() -> Response:
        return jsonify(city="Lisbon", temperature_c=21, sky="clear")

    @app.get("/report")
    def report() -> Response:
        payment = request.environ["paywire.payment"]  # settled before this view runs

        def lines() -> Iterator[str]:
            yield "market report\n"
            yield f"paid by {payment.payer} in {payment.transaction}\n"

        return Response(lines(), mimetype="text/plain")

    app.wsgi_app = WsgiPaymentMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, ROUTES, facilitator, pay_to=info.addresses["payee"], network=info.network,
        assets=AssetRegistry((*KNOWN_ASSETS, info.asset)), store=store, app_name="paywire Flask example")
    return app


def main() -> None:
    info = load_devnet()
    url = os.environ.get("PAYWIRE_FACILITATOR")
    if url is None and info.rpc_url is None:
        raise SystemExit("devnet.json has no rpc_url: run `paywire devnet` (it serves JSON-RPC) first")
    facilitator = url or self_facilitator(str(info.rpc_url), info.facilitator_key)  # one line: in-process
    create_app(info, facilitator).run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")), threaded=True)


if __name__ == "__main__":
    main()
