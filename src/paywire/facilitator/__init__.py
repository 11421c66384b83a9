"""paywire.facilitator."""
