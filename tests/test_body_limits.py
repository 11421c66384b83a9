"""Bounded request bodies (issue 11 item 2): the facilitator checks auth and ``Content-Length`` before it reads a
body and stops reading a chunked one at its limit; the seller's MPP digest binding holds at most its limit. The
servers are real (uvicorn on 127.0.0.1, port 0); memory is the server process's peak RSS (``VmHWM``), compared
with the bytes sent — a bound, not a timing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from paywire.facilitator.app import MAX_BODY_BYTES, create_app
from paywire.facilitator.core import Facilitator
from paywire.serving import serve_asgi

SRC = Path(__file__).resolve().parent.parent / "src"
MIB = 1024 * 1024
TOKEN = "body-limit-token"

FACILITATOR_SCRIPT = """
import asyncio
from paywire.facilitator.app import create_app
from paywire.facilitator.core import Facilitator
from paywire.serving import serve_asgi

async def main():
    async with serve_asgi(create_app(Facilitator([]))) as url:
        print(url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

SELLER_SCRIPT = """
import asyncio, sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi

async def order(request):
    return JSONResponse({"ok": True})

async def main():
    app = Starlette(routes=[Route("/order", order, methods=["POST"])])
    mw = PaymentMiddleware(app, [PaidRoute("POST /order", price="$0.01", mpp=("evm",))], "http://127.0.0.1:9",
                           pay_to="0x" + "11" * 20, network="eip155:84532", store="sqlite:///" + sys.argv[1],
                           mpp_realm="shop.test", mpp_secret=b"k" * 32, check_supported=False)
    async with serve_asgi(mw) as url:
        print(url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


# ------------------------------------------------------------------------------------------------ raw HTTP


def _head(path: str, *, length: int | None, token: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(sock: socket.socket) -> int | None:
    """The status code of the response on ``sock``; None when the server closed or reset without one."""
    got = b""
    try:
        while b"\r\n" not in got:
            data = sock.recv(4096)
            if not data:
                return None
            got += data
    except OSError:
        return None
    return int(got.split(b" ", 2)[1])


def post_large(url: str, path: str, size: int, *, chunked: bool) -> int | None:
    """POST ``size`` bytes (announced, or chunked) as fast as the server takes them; the status it answers (None
    if it closed the connection before answering, which a bounded server may do while we are still sending)."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=120) as sock:
        sock.sendall(_head(path, length=None if chunked else size))
        block = b"x" * MIB
        frame = b"%x\r\n" % len(block) + block + b"\r\n" if chunked else block
        try:
            for _ in range(size // MIB):
                sock.sendall(frame)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered early and closed: what a bounded server does
            pass
        return _status(sock)


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def served_process(script: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), f"server did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def facilitator_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    yield from served_process(FACILITATOR_SCRIPT)


@pytest.fixture
def seller_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    yield from served_process(SELLER_SCRIPT, str(tmp_path / "seller.db"))


# ------------------------------------------------------------------------------------------------ peak memory

BODY = 32 * MIB
CONCURRENT = 3
GROWTH_BOUND = 16 * MIB  # what the server may grow by while 2 × 3 × 32 MiB arrive


def _flood(url: str, path: str) -> list[int | None]:
    """Three concurrent announced and three concurrent chunked ``BODY``-sized POSTs; their statuses."""
    statuses: list[int | None] = []
    lock = threading.Lock()

    def one(chunked: bool) -> None:
        status = post_large(url, path, BODY, chunked=chunked)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one, args=(chunked,)) for chunked in (False, True) for _ in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.parametrize(("fixture", "path", "answer"), [
    ("facilitator_process", "/settle", 413),
    ("seller_process", "/order", 402),
])
def test_peak_rss_stays_flat_under_large_concurrent_bodies(request: pytest.FixtureRequest, fixture: str,
                                                           path: str, answer: int) -> None:
    """Six concurrent 32 MiB POSTs (three announced, three chunked) grow the server's peak RSS by far less than
    one of them: the facilitator answers 413 after at most its 64 KiB limit, the seller answers its 402 after
    at most its MPP digest limit (1 MiB), and neither holds the rest."""
    proc, url = request.getfixturevalue(fixture)
    warm = post_large(url, path, 0, chunked=False)  # load every code path before the baseline
    assert warm in (400, 402), f"warm-up POST got {warm}"
    before = peak_rss(proc.pid)
    statuses = _flood(url, path)
    grown = peak_rss(proc.pid) - before
    assert grown < GROWTH_BOUND, (
        f"peak RSS grew by {grown / MIB:.1f} MiB while {2 * CONCURRENT} × {BODY // MIB} MiB arrived "
        f"(bound {GROWTH_BOUND // MIB} MiB): the body is read whole")
    answered = [s for s in statuses if s is not None]
    assert all(s == answer for s in answered), f"large bodies got {statuses}, expected {answer}"


# ------------------------------------------------------------------------------------------------ the facilitator


async def _exchange(url: str, head: bytes, chunks: list[bytes]) -> int | None:
    """Send a request head and ``chunks`` (no end of body), then read the status: answering it proves the
    server decided without waiting for the rest of the body."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(head)
        for c in chunks:
            writer.write(c)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=60)  # a guard against a hang, not a timing
        return int(line.split(b" ", 2)[1]) if line else None
    finally:
        writer.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


@pytest.mark.asyncio
async def test_oversized_content_length_is_413_before_any_body_is_sent() -> None:
    """A ``Content-Length`` over the limit is answered 413 at once: the facilitator does not wait for (or read)
    a single byte of the body."""
    async with serve_asgi(create_app(Facilitator([]))) as url:
        status = await _exchange(url, _head("/settle", length=10 * 1024 * MIB), [])
    assert status == 413, f"a 10 GiB Content-Length got {status}, expected 413 before the body"


@pytest.mark.asyncio
async def test_chunked_body_is_cut_at_the_limit() -> None:
    """A chunked body is read only until it passes 64 KiB, then answered 413, though its end never comes."""
    piece = b"x" * (16 * 1024)
    chunks = [_chunk(piece)] * (MAX_BODY_BYTES // len(piece) + 1)  # 80 KiB, and no terminating chunk
    async with serve_asgi(create_app(Facilitator([]))) as url:
        status = await _exchange(url, _head("/verify", length=None), chunks)
    assert status == 413, f"a chunked body past the limit got {status}, expected 413"


@pytest.mark.asyncio
async def test_auth_is_checked_before_the_body() -> None:
    """With a token configured, a request without it is 401 before its (huge) body is read; with the token, the
    size check follows (413)."""
    async with serve_asgi(create_app(Facilitator([]), bearer_token=TOKEN)) as url:
        anonymous = await _exchange(url, _head("/settle", length=10 * 1024 * MIB), [])
        authorized = await _exchange(url, _head("/settle", length=10 * 1024 * MIB, token=TOKEN), [])
    assert anonymous == 401, f"an unauthenticated huge POST got {anonymous}, expected 401"
    assert authorized == 413, f"an authenticated huge POST got {authorized}, expected 413"


@pytest.mark.asyncio
async def test_a_body_within_the_limit_is_still_read() -> None:
    """Bodies up to the limit, announced or chunked, reach the JSON parser (400 for a non-payment object)."""
    body = b'{"x": "' + b"y" * (MAX_BODY_BYTES - 16) + b'"}'
    assert len(body) <= MAX_BODY_BYTES
    async with serve_asgi(create_app(Facilitator([]))) as url:
        announced = await _exchange(url, _head("/verify", length=len(body)), [body])
        chunked = await _exchange(url, _head("/verify", length=None), [_chunk(body), b"0\r\n\r\n"])
    assert announced == 400, f"an announced body at the limit got {announced}, expected 400 invalid_payload"
    assert chunked == 400, f"a chunked body at the limit got {chunked}, expected 400 invalid_payload"


# ------------------------------------------------------------------------------------------------ the seller


def _seller_options(tmp_path: Path) -> dict[str, object]:
    return {"pay_to": "0x" + "11" * 20, "network": "eip155:84532", "store": f"sqlite:///{tmp_path / 's.db'}",
            "mpp_realm": "shop.test", "mpp_secret": b"k" * 32, "check_supported": False}


MPP_ROUTE = "POST /order"


@pytest.mark.asyncio
async def test_asgi_seller_answers_an_oversized_mpp_body_without_reading_it(tmp_path: Path) -> None:
    """An MPP route binds bodies up to ``mpp_max_body``; one announced larger is not read at all (it stays
    unbound) and the unpaid request gets its 402 before a byte of the body is sent."""
    from starlette.applications import Starlette

    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute

    mw = PaymentMiddleware(Starlette(), [PaidRoute(MPP_ROUTE, price="$0.01", mpp=("evm",))], "http://127.0.0.1:9",
                           **_seller_options(tmp_path))  # type: ignore[arg-type]
    try:
        async with serve_asgi(mw) as url:
            status = await _exchange(url, _head("/order", length=10 * 1024 * MIB), [])
    finally:
        await mw.flow.aclose()
    assert status == 402, f"a 10 GiB MPP POST got {status}, expected 402 before the body"


@pytest.mark.asyncio
async def test_wsgi_seller_answers_an_oversized_mpp_body_without_reading_it(tmp_path: Path) -> None:
    """The WSGI adapter reads only bodies whose ``Content-Length`` is within ``mpp_max_body``."""
    from paywire.server.core import PaidRoute
    from paywire.server.wsgi import WsgiPaymentMiddleware
    from tests.helpers import serve_wsgi

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:  # never reached unpaid
        raise AssertionError("the app ran for an unpaid request")

    mw = WsgiPaymentMiddleware(app, [PaidRoute(MPP_ROUTE, price="$0.01", mpp=("evm",))], "http://127.0.0.1:9",
                               **_seller_options(tmp_path))  # type: ignore[arg-type]
    try:
        with serve_wsgi(mw) as url:
            status = await _exchange(url, _head("/order", length=10 * 1024 * MIB), [])
    finally:
        await asyncio.to_thread(mw.close)
    assert status == 402, f"a 10 GiB MPP POST to the WSGI seller got {status}, expected 402 before the body"
