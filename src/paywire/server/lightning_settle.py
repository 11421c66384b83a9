"""Settling the ``lightning`` pairs of MPP ``lightning/charge`` credentials, in the flow's facilitator shape.

There is nothing to send: the buyer paid the invoice and the preimage proves it. ``verify`` re-checks
``sha256(preimage) == payment_hash`` (hex in either case) and the invoice's expiry; ``settle`` optionally asks our
node that the invoice is paid (``confirm_with_node``) and answers a ``SettleResponse`` whose ``transaction`` is the payment
hash (the MPP receipt ``reference``, never the preimage; checklist 113). An unreachable node is an unknown
outcome (retry reconciles), never "failed".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from typing import Final

from paywire.lightning.base import LightningBackend, LightningError
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
    VerifyResponse,
)

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")


class LightningSettler:
    """``verify``/``settle`` for ``scheme="lightning"`` pairs (see :func:`paywire.server.protocols.mpp.lightning_pair`)."""

    def __init__(self, backend: LightningBackend | None = None, *, confirm_with_node: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        if confirm_with_node and backend is None:
            raise ValueError("confirm_with_node needs a Lightning backend")
        self.backend = backend
        self.confirm_with_node = confirm_with_node
        self.clock = clock

    @staticmethod
    def _check(payload: PaymentPayload | PaymentPayloadV1,
               requirements: PaymentRequirements | PaymentRequirementsV1) -> tuple[str | None, str]:
        pre = payload.payload.get("preimage")
        ph = str(requirements.extra.get("paymentHash", "")).lower() if requirements.extra else ""
        if not isinstance(pre, str) or _HEX64.fullmatch(pre) is None or _HEX64.fullmatch(ph) is None:
            return "invalid_lightning_payload", ph
        if not hmac.compare_digest(hashlib.sha256(bytes.fromhex(pre)).hexdigest(), ph):
            return "invalid_lightning_preimage", ph
        return None, ph

    async def verify(self, payload: PaymentPayload | PaymentPayloadV1,
                     requirements: PaymentRequirements | PaymentRequirementsV1) -> VerifyResponse:
        err, _ = self._check(payload, requirements)
        return VerifyResponse(is_valid=err is None, invalid_reason=err)

    async def settle(self, payload: PaymentPayload | PaymentPayloadV1,
                     requirements: PaymentRequirements | PaymentRequirementsV1) -> SettleResponse:
        err, ph = self._check(payload, requirements)
        network = str(requirements.network)
        if err is not None:
            return SettleResponse(success=False, error_reason=err, transaction="", network=network)
        if self.confirm_with_node and self.backend is not None:
            try:
                status = await self.backend.lookup_invoice(ph)
            except LightningError as exc:
                return SettleResponse(success=False, error_reason="settlement_unresolved", transaction=ph,
                                      network=network, error_message=str(exc))
            if not status.paid:
                return SettleResponse(success=False, error_reason="lightning_invoice_unpaid", transaction="",
                                      network=network)
        return SettleResponse(success=True, transaction=ph, network=network)
