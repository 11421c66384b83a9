"""A lean keep-alive HTTP/1.1 JSON client on asyncio streams, for the seller's calls to its facilitator.

Two facilitator round trips (``/verify``, ``/settle``) sit on every paid request, so their client overhead is the
seller's overhead: on the dev box an httpx ``AsyncClient`` POST to a local facilitator costs ~2 ms of client
work, this one ~0.3 ms. It speaks just what a facilitator needs: ``GET``/``POST`` with a JSON body, responses
with ``Content-Length``, chunked or close-delimited bodies, http and https, pooled keep-alive connections.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024


class HttpError(Exception):
    """The request did not produce a response (connection, timeout, malformed HTTP)."""


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class JsonHttpClient:
    """``await client.request("POST", "/verify", {...})`` → ``(status, parsed JSON or None)``."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None,
                 max_idle: int = 16) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url, self.timeout, self.headers, self.max_idle = base_url, timeout, dict(headers or {}), max_idle
        self._host, self._tls = u.hostname, u.scheme == "https"
        self._port = u.port or (443 if self._tls else 80)
        self._prefix = u.path.rstrip("/")
        default = self._port == (443 if self._tls else 80)
        self._host_header = self._host if default else f"{self._host}:{self._port}"
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _connect(self) -> _Conn:
        ctx = ssl.create_default_context() if self._tls else None
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=ctx, limit=MAX_HEAD)
        return _Conn(reader, writer)

    def _take(self) -> _Conn | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections belong to the loop that opened them
            self._idle, self._loop = [], loop
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``body``: a JSON value, or ``bytes`` that already are the JSON text."""
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(
            body, separators=(",", ":")).encode()
        lines = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}", "Accept: application/json",
                 "Connection: keep-alive", *(f"{k}: {v}" for k, v in self.headers.items())]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per call, unlike wait_for
                return await self._exchange(raw)
        except TimeoutError:
            raise HttpError(f"{method} {path}: no answer within {self.timeout} s") from None

    async def _exchange(self, raw: bytes) -> tuple[int, Any]:
        conn = self._take()
        reused = conn is not None
        while True:
            if conn is None:
                try:
                    conn = await self._connect()
                except OSError as exc:
                    raise HttpError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
            try:
                conn.writer.write(raw)
                await conn.writer.drain()
                status, headers = await self._read_head(conn)
            except (OSError, asyncio.IncompleteReadError, EOFError) as exc:
                conn.close()
                if reused:  # the server closed an idle keep-alive connection: one fresh attempt
                    conn, reused = None, False
                    continue
                raise HttpError(f"connection failed: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            try:
                payload, keep = await self._read_body(conn, headers)
            except BaseException:
                conn.close()
                raise
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            try:
                return status, json.loads(payload) if payload else None
            except ValueError:
                return status, None

    @staticmethod
    async def _read_head(conn: _Conn) -> tuple[int, dict[str, str]]:
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpError("response head too large") from exc
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise EOFError("connection closed before a response") from exc
            raise HttpError("truncated response head") from exc
        status_line, *rest = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.x response: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in rest:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return int(parts[1]), headers

    @staticmethod
    async def _read_body(conn: _Conn, headers: dict[str, str]) -> tuple[bytes, bool]:
        keep = headers.get("connection", "").lower() != "close"
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                chunks: list[bytes] = []
                total = 0
                while True:
                    size_line = await conn.reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await conn.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                            pass
                        return b"".join(chunks), keep
                    total += size
                    if total > MAX_BODY:
                        raise HttpError("response body too large")
                    chunks.append(await conn.reader.readexactly(size))
                    await conn.reader.readexactly(2)
            if "content-length" in headers:
                n = int(headers["content-length"])
                if not 0 <= n <= MAX_BODY:
                    raise HttpError("bad or too large Content-Length")
                return await conn.reader.readexactly(n), keep
            return await conn.reader.read(MAX_BODY), False  # delimited by close
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as exc:
            raise HttpError(f"malformed response body: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
