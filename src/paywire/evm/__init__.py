"""paywire.evm."""
