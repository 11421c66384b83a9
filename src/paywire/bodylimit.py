"""Bounded request-body reading: look at ``Content-Length`` before reading, and stop reading a chunked body at
the limit. Every body paywire reads goes through here (the facilitator's ``/verify`` and ``/settle``, the
seller's MPP digest binding), so a large upload costs at most ``limit`` bytes of memory, never its size.

No I/O of its own: the ASGI reader takes the server's ``receive`` callable, the WSGI reader the input stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = ["AsgiBody", "declared_length", "read_asgi_body", "read_wsgi_body"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` a request announces (lower-case header names), or None when it names none or an
    unreadable one (then the body is read with the limit enforced on what arrives)."""
    raw = headers.get("content-length", "").strip()
    return int(raw) if raw.isdigit() else None


@dataclass(slots=True)
class AsgiBody:
    """What :func:`read_asgi_body` got. ``body``: the whole body when it is at most the limit, else None;
    ``too_large``: the body is (or announces itself) larger than the limit; ``messages``: the messages taken
    from ``receive``, in order (hand them to the app again with :meth:`replay`)."""

    body: bytes | None
    too_large: bool
    messages: list[Message] = field(default_factory=list)

    def replay(self, receive: Receive) -> Receive:
        """A ``receive`` that yields the messages already read, then asks ``receive`` for the rest."""
        held = list(self.messages)

        async def again() -> Message:
            if held:
                return held.pop(0)
            return await receive()

        return again


async def read_asgi_body(receive: Receive, limit: int, declared: int | None) -> AsgiBody:
    """Read an ASGI request body of at most ``limit`` bytes. A ``declared`` length over the limit reads nothing;
    a chunked (or lying) body is read only until it passes the limit: memory stays within ``limit`` plus one
    chunk. A disconnect or other message before the end leaves ``body`` None."""
    if declared is not None and declared > limit:
        return AsgiBody(None, True)
    held: list[Message] = []
    size, more = 0, True
    while more:
        message = await receive()
        held.append(message)
        if message.get("type") != "http.request":
            return AsgiBody(None, False, held)
        size += len(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if size > limit:
            return AsgiBody(None, True, held)
    return AsgiBody(b"".join(m.get("body", b"") for m in held), False, held)


def read_wsgi_body(stream: BinaryIO | None, limit: int, declared: int | None) -> bytes | None:
    """Read a WSGI body of ``declared`` length when it is at most ``limit``; None otherwise (nothing is read, so
    the app still gets the whole body from the untouched stream). WSGI offers no end marker without a length,
    so a body without ``Content-Length`` is not read either."""
    if declared is None or declared > limit:
        return None
    return stream.read(declared) if stream is not None and declared else b""
