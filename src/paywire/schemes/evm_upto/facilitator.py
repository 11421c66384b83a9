"""Facilitator side of ``upto`` on EVM: the Permit2 checks and settlement of ``paywire.schemes.evm_permit2``
with the upto proxy; ``/supported`` names the facilitator address payers bind into their witness."""

from __future__ import annotations

from typing import Any

from paywire.schemes.evm_permit2 import UPTO, Permit2Facilitator


class UptoEvmFacilitator(Permit2Facilitator):
    """``upto`` × ``eip155:*`` for the facilitator role (options as ``ExactEvmFacilitator``'s)."""

    def __init__(self, networks: Any, **options: Any) -> None:
        super().__init__(UPTO, networks, **options)


__all__ = ["UptoEvmFacilitator"]
