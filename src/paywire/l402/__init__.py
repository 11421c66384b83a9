"""L402 (formerly LSAT): macaroon + Lightning preimage as an HTTP 402 credential (digest §10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.l402.caveats import (
        Caveat,
        CaveatError,
        capabilities_caveat,
        services_caveat,
        valid_until_caveat,
    )
    from paywire.l402.header import (
        L402Credential,
        format_challenges,
        parse_challenges_l402,
        parse_credential,
    )
    from paywire.l402.identifier import Identifier
    from paywire.l402.server import L402Challenge, L402Denied, L402Ok, L402Server

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.l402.caveats": (
        "Caveat", "CaveatError", "capabilities_caveat", "services_caveat", "valid_until_caveat",
    ),
    "paywire.l402.header": (
        "L402Credential", "format_challenges", "parse_challenges_l402", "parse_credential",
    ),
    "paywire.l402.identifier": ("Identifier",),
    "paywire.l402.server": ("L402Challenge", "L402Denied", "L402Ok", "L402Server"),
})

__all__ = [
    "Caveat",
    "CaveatError",
    "Identifier",
    "L402Challenge",
    "L402Credential",
    "L402Denied",
    "L402Ok",
    "L402Server",
    "capabilities_caveat",
    "format_challenges",
    "parse_challenges_l402",
    "parse_credential",
    "services_caveat",
    "valid_until_caveat",
]
