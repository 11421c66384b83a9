"""paywire.client."""
