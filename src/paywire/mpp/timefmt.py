"""RFC 3339 timestamps as MPP writes them (``2026-01-15T12:05:00.123Z``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from paywire.errors import WireError

_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def format_rfc3339(ts: float) -> str:
    """UTC with millisecond precision and a ``Z`` suffix."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 date-time with an explicit offset; ``WireError`` otherwise."""
    if not isinstance(text, str) or _RFC3339.fullmatch(text) is None:
        raise WireError("invalid_timestamp", "not an RFC 3339 date-time with an offset")
    frac = ""
    body = text
    m = re.search(r"\.(\d+)", text)
    if m:  # Python < 3.11.? accepts at most 6 fractional digits: cut, the rest is below a microsecond
        frac = m.group(1)
        body = text[: m.start()] + "." + frac[:6].ljust(6, "0") + text[m.end():]
    try:
        return datetime.fromisoformat(body.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
    except ValueError:
        raise WireError("invalid_timestamp", "not a valid date-time") from None
