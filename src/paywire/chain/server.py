"""Serve any ``Transport`` as standard Ethereum JSON-RPC over HTTP (how ``paywire devnet`` exposes the embedded
chain to web3.py, viem, ethers …).

``JsonRpcServer(transport).start()`` binds 127.0.0.1 on a free port (port 0) and returns the URL; the
Starlette app runs under uvicorn in a background thread. Single and batch requests are supported; errors
are JSON-RPC error objects, reverts are code 3 with the revert bytes as ``error.data`` (like geth/anvil).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.bodylimit import declared_length, read_asgi_body
from paywire.chain.rpc import RpcError, Transport, to_data
from paywire.errors import ChainError, ChainRevert

__all__ = ["JsonRpcServer", "error_object", "make_app"]

log = logging.getLogger(__name__)


def error_object(exc: BaseException) -> dict[str, Any]:
    """The JSON-RPC error object for an exception raised by a transport."""
    if isinstance(exc, ChainRevert):
        err: dict[str, Any] = {"code": 3, "message": str(exc)}
        if exc.data:
            err["data"] = to_data(exc.data)
        return err
    if isinstance(exc, RpcError):
        err = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            err["data"] = exc.data
        return err
    if isinstance(exc, ChainError):
        return {"code": -32000, "message": str(exc)}
    return {"code": -32603, "message": f"internal error: {type(exc).__name__}"}


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


async def _dispatch(transport: Transport, call: Any) -> dict[str, Any] | None:
    """One JSON-RPC call → response dict (``None`` for notifications)."""
    if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or not isinstance(call.get("method"), str):
        request_id = call.get("id") if isinstance(call, dict) else None
        return _error(request_id, -32600, "invalid request")
    request_id = call.get("id")
    is_notification = "id" not in call
    params = call.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        return None if is_notification else _error(request_id, -32602, "params must be an array")
    try:
        result = await transport.request(call["method"], params)
    except Exception as exc:
        if not isinstance(exc, ChainError):
            log.exception("JSON-RPC %s failed", call["method"])
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "id": request_id, "error": error_object(exc)}
    if is_notification:
        return None
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


MAX_BODY = 8 * 1024 * 1024  # a devnet JSON-RPC request (contract deployments included) is far smaller


def make_app(transport: Transport) -> Starlette:
    """The ASGI app: ``POST /`` answers JSON-RPC; ``GET /`` says what this is."""

    async def rpc(request: Request) -> Response:
        got = await read_asgi_body(request.receive, MAX_BODY, declared_length(request.headers))
        if got.body is None:
            return JSONResponse(_error(None, -32600, f"request body over {MAX_BODY} bytes"), status_code=413)
        body = got.body
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse(_error(None, -32700, "parse error"))
        if isinstance(payload, list):
            if not payload:
                return JSONResponse(_error(None, -32600, "empty batch"))
            answers = await asyncio.gather(*(_dispatch(transport, call) for call in payload))
            results = [a for a in answers if a is not None]
            return JSONResponse(results) if results else Response(status_code=204)
        answer = await _dispatch(transport, payload)
        return JSONResponse(answer) if answer is not None else Response(status_code=204)

    async def info(request: Request) -> Response:
        return JSONResponse({"service": "paywire JSON-RPC", "usage": "POST JSON-RPC 2.0 requests to /"})

    return Starlette(
        routes=[Route("/", rpc, methods=["POST"]), Route("/", info, methods=["GET"])],
        # browsers (viem/ethers dapps on another origin) may call a local devnet, like anvil allows
        middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"])],
    )


class JsonRpcServer:
    """Run ``make_app(transport)`` with uvicorn in a background thread.

    ``with JsonRpcServer(node) as server: server.url …`` or ``url = server.start(); ...; server.stop()``.
    ``port=0`` (default) picks a free port; ``.port``/``.url`` report the bound one.
    """

    def __init__(self, transport: Transport, host: str = "127.0.0.1", port: int = 0) -> None:
        self.transport = transport
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            return self.url
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            make_app(self.transport),
            log_level="warning",
            lifespan="off",
            access_log=False,
            loop="asyncio",
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # pragma: no cover - reported by start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"paywire-jsonrpc-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if self._error is not None or not self._thread.is_alive():
                self._thread = self._server = None
                raise ChainError(f"JSON-RPC server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise ChainError(f"JSON-RPC server did not start within {timeout}s")
            time.sleep(0.005)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> JsonRpcServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
