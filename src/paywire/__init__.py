"""paywire: HTTP 402 machine payments."""

__version__ = "0.1.0"
