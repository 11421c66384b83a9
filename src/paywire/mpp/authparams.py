"""HTTP authentication challenges (RFC 9110 §11): parse ``WWW-Authenticate`` lists, quote auth-param values.

One header may hold several challenges separated by commas, and a response may carry several headers; both
are flattened into one ordered list. Parsing is lenient where deployed peers are sloppy (missing commas
between auth-params, as Alby's L402 challenge has) and strict where it matters (a repeated parameter makes
the challenge invalid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

_TCHAR: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_BARE_VALUE: Final = re.compile(r"[^\s,\"]+")
_HEX4: Final = re.compile(r"[0-9A-Fa-f]{4}")


@dataclass(slots=True)
class AuthChallenge:
    """One challenge: its scheme as written, lowercase parameter names, or a token68."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None
    valid: bool = True  # False after a repeated parameter or an unterminated quoted string

    def is_scheme(self, *names: str) -> bool:
        """Case-insensitive scheme test."""
        low = self.scheme.lower()
        return any(low == n.lower() for n in names)


def parse_challenges(values: str | Iterable[str]) -> list[AuthChallenge]:
    """Every challenge in one header value or in a list of values, in order."""
    out: list[AuthChallenge] = []
    for value in [values] if isinstance(values, str) else values:
        out.extend(_parse_one(value))
    return out


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _parse_one(s: str) -> list[AuthChallenge]:
    out: list[AuthChallenge] = []
    cur: AuthChallenge | None = None
    i, n = 0, len(s)
    while i < n:
        if s[i] in " \t,":
            i += 1
            continue
        m = _TCHAR.match(s, i)
        if m is None:  # garbage: skip one character
            i += 1
            continue
        name, i = m.group(), m.end()
        j = _skip_ws(s, i)
        if cur is not None and j < n and s[j] == "=" and not (j + 1 < n and s[j + 1] == "="):
            value, i, ok = _read_value(s, _skip_ws(s, j + 1))
            key = name.lower()
            if key in cur.params or not ok:
                cur.valid = False
            cur.params[key] = value
            continue
        cur = AuthChallenge(scheme=name)
        out.append(cur)
        k = _skip_ws(s, i)
        t = _TOKEN68.match(s, k)
        if t is not None and k > i:
            after = _skip_ws(s, t.end())
            if after >= n or s[after] == ",":
                cur.token68 = t.group()
                i = t.end()
    return out


def _read_value(s: str, i: int) -> tuple[str, int, bool]:
    if i < len(s) and s[i] == '"':
        return _read_quoted(s, i + 1)
    m = _BARE_VALUE.match(s, i)
    if m is None:
        return "", i, True
    return m.group(), m.end(), True


def _read_quoted(s: str, i: int) -> tuple[str, int, bool]:
    buf: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(buf), i + 1, True
        if c == "\\" and i + 1 < n:
            nxt = s[i + 1]
            if nxt == "u" and _HEX4.fullmatch(s, i + 2, i + 6):  # mppx writes non-Latin-1 as \uXXXX
                unit = int(s[i + 2 : i + 6], 16)
                i += 6
                if 0xD800 <= unit <= 0xDBFF and s.startswith("\\u", i) and _HEX4.fullmatch(s, i + 2, i + 6):
                    low = int(s[i + 2 : i + 6], 16)
                    if 0xDC00 <= low <= 0xDFFF:
                        buf.append(chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)))
                        i += 6
                        continue
                buf.append("\ufffd" if 0xD800 <= unit <= 0xDFFF else chr(unit))
                continue
            buf.append(nxt)
            i += 2
            continue
        buf.append(c)
        i += 1
    return "".join(buf), n, False


_PLAIN = re.compile(r'[\t\x20-\x21\x23-\x5b\x5d-\x7e]*')


def quote(value: str) -> str:
    """An auth-param quoted-string; non-ASCII as ``\\uXXXX`` (as mppx), control characters refused."""
    if _PLAIN.fullmatch(value):  # the common case (base64url, hex, ids): nothing to escape
        return '"' + value + '"'
    parts = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            parts.append("\\" + ch)
        elif (code < 0x20 and ch != "\t") or code == 0x7F:
            raise ValueError("header values cannot hold control characters")
        elif code < 0x7F:
            parts.append(ch)
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            parts.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    parts.append('"')
    return "".join(parts)


def format_challenge(scheme: str, params: Iterable[tuple[str, str]]) -> str:
    """``scheme k="v", k2="v2"``."""
    return scheme + " " + ", ".join(f"{k}={quote(v)}" for k, v in params)
