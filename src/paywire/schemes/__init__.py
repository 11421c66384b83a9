"""paywire.schemes."""
