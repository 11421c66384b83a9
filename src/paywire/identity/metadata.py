"""The payer's identity as request metadata between a seller and its facilitator (sans-I/O).

A seller that proved who pays (Sign-In-With-X, an agent signature, an MPP ``source``) names the DID in the
payment payload it hands its facilitator, under ``extensions["paywire-identity"] = {"info": {"did": …}}`` —
outside what the payer signed, so it changes neither the authorization nor the payment's identity (its hash
leaves extensions out), and facilitators that do not know the key ignore it. Our facilitator records it with
the settlement (``paywire_settlements.identity``): as the seller's statement, which the facilitator cannot check
itself. While one settlement runs, :data:`settling_for` carries it to the store's claim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final

from paywire.identity.did import Identity

IDENTITY_EXTENSION: Final = "paywire-identity"
_DID = re.compile(r"did:[a-z0-9]+:[A-Za-z0-9.%:_\-#]{1,480}")

proven_identity: ContextVar[Identity | None] = ContextVar("paywire_proven_identity", default=None)
"""The identity the request being decided proved (set by the seller's flow while protocols read credentials:
an L402 token with an ``identity`` caveat checks it)."""

settling_for: ContextVar[str | None] = ContextVar("paywire_settling_for", default=None)
"""The DID the settlement being claimed in this task is for (set by the facilitator around one settle)."""


def identity_extension(did: str) -> dict[str, Any]:
    """The extension entry naming ``did``."""
    return {"info": {"did": did}}


def identity_of(extensions: Mapping[str, Any] | None) -> str | None:
    """The DID a payload's extensions name, when it is one (anything else: None)."""
    entry = (extensions or {}).get(IDENTITY_EXTENSION)
    info = entry.get("info") if isinstance(entry, Mapping) else None
    did = info.get("did") if isinstance(info, Mapping) else None
    return did if isinstance(did, str) and _DID.fullmatch(did) is not None else None


__all__ = ["IDENTITY_EXTENSION", "identity_extension", "identity_of", "proven_identity", "settling_for"]
