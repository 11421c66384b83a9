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


def _check_tree(value: Any, check_surrogates: bool) -> None:
    """Enforce MAX_JSON_DEPTH and (when asked) the absence of lone surrogates, iteratively."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise WireError(reasons.INVALID_JSON, f"nesting deeper than {MAX_JSON_DEPTH}")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if check_surrogates and isinstance(key, str) and SURROGATE_RE.search(key):
                raise WireError(reasons.INVALID_JSON, "lone UTF-16 surrogate in a key")
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif check_surrogates and isinstance(child, str) and SURROGATE_RE.search(child):
                raise WireError(reasons.INVALID_JSON, "lone UTF-16 surrogate in a string")


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs_hook, parse_constant=_parse_constant, parse_float=_parse_float
)


def loads_object(text: str) -> dict[str, Any]:
    """Parse ``text`` (already valid Unicode without raw surrogates) into a JSON object, strictly.

    Rejects NaN/Infinity (and overflowing floats), duplicate keys, nesting deeper than
    :data:`MAX_JSON_DEPTH` and ``\\u`` escapes that produce lone surrogates (``invalid_json``);
    a valid non-object document raises ``not_an_object``.
    """
    try:
        value = _DECODER.decode(text)
    except _Rejected as exc:
        raise WireError(reasons.INVALID_JSON, str(exc)) from None
    except RecursionError:
        raise WireError(reasons.INVALID_JSON, f"nesting deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:
        raise WireError(reasons.INVALID_JSON, str(exc)[:120]) from None
    if not isinstance(value, dict):
        raise WireError(reasons.NOT_AN_OBJECT, f"top-level JSON value is {type(value).__name__}")
    # Fast paths: a document with <= MAX_JSON_DEPTH brackets cannot nest deeper, and text without
    # escapes cannot hold a lone surrogate (the caller guarantees valid Unicode text).
    check_surrogates = "\\u" in text
    if check_surrogates or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        _check_tree(value, check_surrogates)
    return value
