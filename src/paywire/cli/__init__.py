"""paywire.cli."""
