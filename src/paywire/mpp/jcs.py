"""RFC 8785 JSON Canonicalization Scheme (JCS): the one byte form of a JSON value.

Objects are sorted by the UTF-16 code units of their keys, strings use the minimal JSON escapes, and numbers
are written the way ECMAScript's ``Number.prototype.toString`` writes an IEEE 754 double (RFC 8785 §3.2.2.3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from paywire.x402._json import SURROGATE_RE

MAX_EXACT_INT = 2**53
"""Integers up to this magnitude are exact doubles and print as themselves."""


class JcsError(ValueError):
    """The value has no JSON canonical form (NaN, infinity, lone surrogate, non-JSON type, too deep)."""


def canonicalize(value: Any) -> bytes:
    """The UTF-8 JCS encoding of ``value`` (dict/list/tuple/str/int/float/bool/None)."""
    out: list[str] = []
    _emit(value, out, 0)
    return "".join(out).encode("utf-8")


def canonical_text(value: Any) -> str:
    """:func:`canonicalize` as text."""
    return canonicalize(value).decode("utf-8")


def _emit(value: Any, out: list[str], depth: int) -> None:
    if depth > 64:
        raise JcsError("nesting too deep")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(value) if abs(value) <= MAX_EXACT_INT else format_number(_to_double(value)))
    elif isinstance(value, float):
        out.append(format_number(value))
    elif isinstance(value, Mapping):
        items = []
        for key in value:
            if not isinstance(key, str):
                raise JcsError(f"object key {key!r} is not a string")
            items.append(key)
        items.sort(key=_utf16_key)
        out.append("{")
        for i, key in enumerate(items):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _emit(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out, depth + 1)
        out.append("]")
    else:
        raise JcsError(f"{type(value).__name__} is not a JSON value")


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _string(s: str) -> str:
    if SURROGATE_RE.search(s):
        raise JcsError("lone UTF-16 surrogate in a string")
    return json.dumps(s, ensure_ascii=False)


def _to_double(n: int) -> float:
    try:
        return float(n)
    except OverflowError:
        raise JcsError("integer too large for an IEEE 754 double") from None


def format_number(x: float) -> str:
    """ECMAScript ``Number.prototype.toString`` for a finite double (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(x):
        raise JcsError("NaN and Infinity have no JSON form")
    if x == 0:
        return "0"  # also -0
    sign = "-" if x < 0 else ""
    text = repr(abs(x))  # shortest digits that round-trip, like ECMAScript
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    n = len(whole) + exponent  # the decimal point sits after n digits
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        body = (digits if k == 1 else digits[0] + "." + digits[1:]) + exp
    return sign + body
