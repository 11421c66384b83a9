"""The identity layer: who pays and who sells (docs/identity.md).

Sans-I/O cores: :mod:`~paywire.identity.did` (DIDs and the :class:`Identity` value object),
:mod:`~paywire.identity.siwe` (EIP-4361 messages), :mod:`~paywire.identity.siwx` (the x402
``sign-in-with-x`` extension). The seller's single-use nonce table is :mod:`paywire.store.identity`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.identity.did import (
        DidError,
        DidKey,
        Identity,
        did_key,
        did_pkh,
        parse_did_key,
        parse_did_pkh,
    )
    from paywire.identity.siwe import SiweError, SiweMessage, parse_message
    from paywire.identity.siwx import SiwxFailure, SiwxIssuer, SiwxProof

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.identity.did": ("DidError", "DidKey", "Identity", "did_key", "did_pkh", "parse_did_key",
                             "parse_did_pkh"),
    "paywire.identity.siwe": ("SiweError", "SiweMessage", "parse_message"),
    "paywire.identity.siwx": ("SiwxFailure", "SiwxIssuer", "SiwxProof"),
})

__all__ = ["DidError", "DidKey", "Identity", "SiweError", "SiweMessage", "SiwxFailure", "SiwxIssuer", "SiwxProof",
           "did_key", "did_pkh", "parse_did_key", "parse_did_pkh", "parse_message"]
