"""The official x402 Python SDK (2.25.0) as a SIWX server for tests/test_identity_siwx.py: FastAPI with its
payment middleware, ``create_siwx_resource_server_extension`` and an auth-only route (``accepts: []``), which
its request hook opens to any valid sign-in. Prints ``{"url": ...}`` once listening, then serves until killed.
"""

import json
import socket

import uvicorn
from fastapi import FastAPI
from x402 import x402ResourceServer
from x402.extensions.sign_in_with_x import (
    CreateSIWxResourceServerExtensionOptions,
    DeclareSIWxOptions,
    InMemorySIWxStorage,
    create_siwx_resource_server_extension,
    declare_siwx_extension,
)
from x402.http import HTTPFacilitatorClient
from x402.http.middleware.fastapi import payment_middleware

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)  # listening before the URL is printed: a client may connect while uvicorn still starts
origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
server = x402ResourceServer(HTTPFacilitatorClient())
server.register_extension(create_siwx_resource_server_extension(
    CreateSIWxResourceServerExtensionOptions(origin=origin, storage=InMemorySIWxStorage())))
routes = {"GET /profile": {"accepts": [], "extensions": declare_siwx_extension(
    DeclareSIWxOptions(network="eip155:8453", statement="Sign in to see your profile"))}}
middleware = payment_middleware(routes, server, sync_facilitator_on_start=False)
app = FastAPI()


@app.middleware("http")
async def x402(request, call_next):
    return await middleware(request, call_next)


@app.get("/profile")
async def profile():
    return {"profile": "yours"}


print(json.dumps({"url": origin}), flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
