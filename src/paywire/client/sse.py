"""The seller's receipt at the end of a streamed paid response: a server-sent event ``payment-response`` whose
``data`` is the ``PAYMENT-RESPONSE`` header's value (sent after the stream's last unit, when the charge is known).
Pure: bytes in, the receipt's raw value out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

RECEIPT_EVENT: Final = "payment-response"
_MAX_EVENT: Final = 64 * 1024  # a receipt event is a few KiB; a longer pending event is not one


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """Is the response a ``text/event-stream``? (``headers``: lookups with lower-case names work)."""
    return "text/event-stream" in (headers.get("content-type") or "").lower()


class ReceiptScanner:
    """Fed the body as it arrives (any chunking, ``\\n`` or ``\\r\\n`` lines); ``receipt`` is the ``data`` of the
    last complete ``payment-response`` event seen. Holds at most one pending event of at most 64 KiB."""

    def __init__(self) -> None:
        self._pending = b""
        self.receipt: str | None = None

    def feed(self, chunk: bytes) -> None:
        data = (self._pending + chunk).replace(b"\r\n", b"\n")
        if data.endswith(b"\r"):  # a CRLF split across chunks: wait for its LF
            data, self._pending = data[:-1], b"\r"
        else:
            self._pending = b""
        *events, rest = data.split(b"\n\n")
        for event in events:
            self._event(event)
        self._pending = (rest if len(rest) <= _MAX_EVENT else b"") + self._pending

    def end(self) -> str | None:
        """The body ended: a last event without its blank line counts too. Returns ``receipt``."""
        if self._pending.strip():
            self._event(self._pending.replace(b"\r", b""))
        self._pending = b""
        return self.receipt

    def _event(self, block: bytes) -> None:
        name, data = "message", []
        for line in block.decode("utf-8", "replace").split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if name == RECEIPT_EVENT and data:
            self.receipt = "\n".join(data).strip()


__all__ = ["RECEIPT_EVENT", "ReceiptScanner", "is_event_stream"]


Ended = Callable[[str | None], Coroutine[Any, Any, None]]
"""What a watched body calls once when it ends: with the closing receipt event's value, or None without one."""


class SyncReceiptTail:
    """A sync body's watcher: :meth:`feed` each chunk the caller reads; :meth:`end` (once, at the body's end or
    close) runs ``ended`` on the buyer's private loop. A failure there is logged: the body the caller reads stays
    intact, and the ledger row stays as it was."""

    def __init__(self, ended: Ended) -> None:
        self._ended, self._scan, self._done = ended, ReceiptScanner(), False

    def feed(self, chunk: bytes) -> None:
        self._scan.feed(chunk)

    def end(self) -> None:
        if self._done:
            return
        self._done = True
        from paywire.transport.loop_thread import run_sync

        try:
            run_sync(self._ended(self._scan.end()))
        except Exception:
            logging.getLogger("paywire.client").exception(
                "paywire: could not record the receipt at the end of a streamed response")
