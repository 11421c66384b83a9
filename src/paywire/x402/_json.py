"""Strict JSON text -> object parsing shared by the codec and the models (internal)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from paywire.errors import WireError
from paywire.x402 import reasons

MAX_JSON_DEPTH: Final = 32
"""Deepest container nesting accepted (the top-level object is depth 1)."""

SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
_CONTAINER: Final = (dict, list)
# One left-to-right pass: a string token (closing quote optional, so an unterminated string never
# makes the engine backtrack) or a captured bracket. Linear time on any input.
_TOKEN_RE: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|([\[\]{}])', re.DOTALL)


class _Rejected(Exception):
    """Raised from json hooks; converted to WireError by :func:`loads_object`."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {key!r:.60}")
            seen.add(key)
    return obj


def _parse_constant(name: str) -> Any:
    raise _Rejected(f"non-finite number {name}")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number out of range {text:.40}")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs_hook, parse_constant=_parse_constant, parse_float=_parse_float
)


def _check_depth(text: str) -> None:
    """Reject nesting deeper than MAX_JSON_DEPTH *before* parsing (lexically, strings skipped).

    Doing this up front keeps the recursive json scanner shallow whatever ``sys.getrecursionlimit()``
    is, so deep input can neither overflow the C stack nor depend on the interpreter's settings.
    """
    depth = 0
    for bracket in _TOKEN_RE.findall(text):
        if not bracket:  # a string
            continue
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise WireError(reasons.INVALID_JSON, f"nesting deeper than {MAX_JSON_DEPTH}")
        else:
            depth -= 1


def _check_surrogates(value: Any) -> None:
    """Reject strings holding lone UTF-16 surrogates (from ``\\uD800``-style escapes), iteratively."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(key, str) and SURROGATE_RE.search(key):
                raise WireError(reasons.INVALID_JSON, "lone UTF-16 surrogate in a key")
            if isinstance(child, _CONTAINER):
                stack.append(child)
            elif isinstance(child, str) and SURROGATE_RE.search(child):
                raise WireError(reasons.INVALID_JSON, "lone UTF-16 surrogate in a string")


def loads_object(text: str) -> dict[str, Any]:
    """Parse ``text`` (valid Unicode without raw surrogates) into a JSON object, strictly.

    Rejects (``invalid_json``) anything that is not JSON, NaN/Infinity and overflowing floats,
    duplicate keys, nesting deeper than :data:`MAX_JSON_DEPTH` and ``\\u`` escapes producing lone
    surrogates; valid JSON that is not an object raises ``not_an_object``.
    """
    # A document with at most MAX_JSON_DEPTH brackets cannot nest deeper.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        _check_depth(text)
    try:
        value = _DECODER.decode(text)
    except _Rejected as exc:
        raise WireError(reasons.INVALID_JSON, str(exc)) from None
    except RecursionError:  # pragma: no cover - depth is bounded above
        raise WireError(reasons.INVALID_JSON, f"nesting deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:
        raise WireError(reasons.INVALID_JSON, str(exc)[:120]) from None
    if not isinstance(value, dict):
        raise WireError(reasons.NOT_AN_OBJECT, f"top-level JSON value is {type(value).__name__}")
    # Text without escapes cannot hold a lone surrogate (the caller guarantees valid Unicode).
    if "\\u" in text:
        _check_surrogates(value)
    return value
