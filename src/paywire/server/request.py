"""What the seller's core knows about an HTTP request: framework-neutral, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Method, path, full URL and lower-cased headers of one request (what pricing callables receive)."""

    method: str
    path: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query_string: str = ""
    body: bytes | None = None
    """The request body when the adapter read it (MPP routes bind it through the challenge ``digest``)."""
    client: str | None = None
    """The peer's address (ASGI ``scope["client"]``, WSGI ``REMOTE_ADDR``), when the server knows it."""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string, keep_blank_values=True)

    @property
    def may_have_body(self) -> bool:
        """A body is announced (``Content-Length`` > 0 or ``Transfer-Encoding``)."""
        length = self.headers.get("content-length", "").strip()
        return bool(self.headers.get("transfer-encoding")) or (length.isdigit() and int(length) > 0)

    @property
    def is_browser(self) -> bool:
        """SDK rule (checklist 20): ``Accept`` has ``text/html`` and ``User-Agent`` has ``Mozilla``."""
        return "text/html" in self.headers.get("accept", "") and "Mozilla" in self.headers.get("user-agent", "")


def build_url(scheme: str, host: str | None, server: tuple[str, int] | None, path: str, query: str) -> str:
    """The request URL as the client addressed it (Host header first)."""
    if not host:
        h, p = server or ("localhost", 80)
        host = h if p in (80, 443) else f"{h}:{p}"
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
