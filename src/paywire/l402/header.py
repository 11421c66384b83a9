"""L402 header grammar (digest §10.1, checklist 95–99, 103).

Challenges are emitted in both forms — ``L402 macaroon="…", invoice="…"`` first (aperture, l402-requests,
Loop need that literal order), then ``L402 version="0", token="…", invoice="…"`` (the 2026 spec) — and
optionally an ``LSAT`` one. Parsing is lenient: ``L402`` or ``LSAT``, ``token`` or ``macaroon``, params in
any order, missing commas tolerated. Credentials are ``L402 <macaroon>[,<macaroon>…]:<hex preimage>`` (the
spec's ``auth-tokens ":" preimage``; spaces after the commas tolerated); the preimage is read in either case and
kept lowercase.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from paywire.errors import WireError
from paywire.mpp.authparams import format_challenge, parse_challenges

SCHEMES: Final = ("L402", "LSAT")
FORM_MACAROON: Final = "macaroon"
FORM_TOKEN: Final = "token"
FORM_LSAT: Final = "lsat"
DEFAULT_FORMS: Final = (FORM_MACAROON, FORM_TOKEN)
_PREIMAGE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_CRED_RE: Final = re.compile(r"\s*(L402|LSAT)\s+(\S.*?):([0-9a-fA-F]{64})\s*", re.IGNORECASE)
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9+/_-]+=*")


@dataclass(frozen=True, slots=True)
class L402Challenge:
    scheme: str
    macaroon: str
    invoice: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class L402Credential:
    scheme: str
    macaroons: tuple[str, ...]
    preimage: str  # lowercase hex


def format_challenges(macaroon_b64: str, invoice: str, forms: Sequence[str] = DEFAULT_FORMS) -> list[str]:
    """One ``WWW-Authenticate`` value per form, in the given order."""
    out = []
    for form in forms:
        if form == FORM_MACAROON:
            out.append(format_challenge("L402", [("macaroon", macaroon_b64), ("invoice", invoice)]))
        elif form == FORM_TOKEN:
            out.append(format_challenge("L402", [("version", "0"), ("token", macaroon_b64), ("invoice", invoice)]))
        elif form == FORM_LSAT:
            out.append(format_challenge("LSAT", [("macaroon", macaroon_b64), ("invoice", invoice)]))
        else:
            raise ValueError(f"unknown L402 challenge form {form!r}")
    return out


def parse_challenges_l402(values: str | Iterable[str]) -> list[L402Challenge]:
    """Every usable L402/LSAT challenge (client side, checklist 98/103)."""
    out = []
    for c in parse_challenges(values):
        if not c.is_scheme(*SCHEMES) or not c.valid:
            continue
        mac = c.params.get("token") or c.params.get("macaroon")
        inv = c.params.get("invoice")
        if mac and inv:
            out.append(L402Challenge(c.scheme.upper(), mac, inv, c.params.get("version")))
    return out


def parse_credential(authorization: str) -> L402Credential:
    """``L402|LSAT <tokens>:<preimage>``; ``WireError("malformed_l402")`` otherwise (checklist 97/99)."""
    for part in _split_schemes(authorization):
        m = _CRED_RE.fullmatch(part)
        if m is None:
            continue
        tokens = tuple(t.strip() for t in m.group(2).split(","))
        if any(_TOKEN_RE.fullmatch(t) is None for t in tokens):
            break
        return L402Credential(m.group(1).upper(), tokens, m.group(3).lower())
    raise WireError("malformed_l402", "expected 'L402 <base64 macaroon>[,<base64 macaroon>…]:<64 hex preimage>'")


def has_l402(authorization: str | None) -> bool:
    if not authorization:
        return False
    return any(p.split(" ", 1)[0].upper() in SCHEMES for p in _split_schemes(authorization))


def _split_schemes(authorization: str) -> list[str]:
    """An ``Authorization`` value may hold several credentials; L402 tokens themselves contain commas."""
    parts: list[str] = []
    for piece in authorization.split(","):
        head = piece.strip().split(" ", 1)[0].upper()
        if parts and not (head in SCHEMES or head in ("PAYMENT", "BEARER", "BASIC")):
            parts[-1] += "," + piece
        else:
            parts.append(piece.strip())
    return parts


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """aperture's alternative: a hex macaroon in ``Macaroon``/``Grpc-Metadata-Macaroon`` carrying a
    ``preimage=<hex>`` caveat; returns an equivalent ``L402 <b64>:<preimage>`` value, or None."""
    from paywire.l402 import macaroons as M  # local: keeps header parsing import-light

    low = {k.lower(): v for k, v in headers.items()}
    raw = low.get("macaroon") or low.get("grpc-metadata-macaroon")
    if not raw:
        return None
    try:
        mac = M.decode_bytes(bytes.fromhex(raw.strip()))
        caveats = M.first_party_caveats(mac)
    except (ValueError, WireError, Exception):
        return None
    pre = next((c.value for c in caveats if c.condition == "preimage"), None)
    if pre is None or _PREIMAGE_RE.fullmatch(pre) is None:
        return None
    return f"L402 {M.encode(mac)}:{pre.lower()}"
