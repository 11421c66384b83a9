"""Moved to :mod:`paywire.schemes.registry`; these names stay importable from here."""

from paywire.schemes.registry import ClientScheme, FacilitatorScheme, ServerScheme, handles, supported_kinds

__all__ = ["ClientScheme", "FacilitatorScheme", "ServerScheme", "handles", "supported_kinds"]
