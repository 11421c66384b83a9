"""paywire.server."""
