"""Typed errors shared by every layer of paywire."""

from __future__ import annotations


class PaywireError(Exception):
    """Base class for all paywire errors."""


class WireError(PaywireError):
    """A protocol message could not be decoded or is not valid.

    ``reason`` is a stable machine code (see ``paywire.x402.reasons``); ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ChainError(PaywireError):
    """The chain could not be reached or answered garbage: the outcome of the operation is unknown."""


class ChainRevert(ChainError):
    """A call or transaction reverted; ``reason`` is the decoded revert string or custom error name."""

    def __init__(self, reason: str, data: bytes = b"") -> None:
        super().__init__(f"execution reverted: {reason}" if reason else "execution reverted")
        self.reason = reason
        self.data = data


class ConfigError(PaywireError):
    """paywire was configured in a way that cannot work; the message says what to change."""
