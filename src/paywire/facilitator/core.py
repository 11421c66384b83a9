"""The facilitator's decisions: route a payment to its scheme plugin, verify, settle. No HTTP here."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from paywire.identity.metadata import identity_of, settling_for
from paywire.schemes.registry import FacilitatorScheme, default_registry, handles, supported_kinds
from paywire.store.settlements import Settlement, SettlementStore
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
    requirements_v1_to_v2,
)
from paywire.x402.networks import to_caip2, to_caip2_or_none, to_v1_name

if TYPE_CHECKING:
    from paywire.risk.engine import RiskEngine
    from paywire.risk.model import Event

AnyPayload = PaymentPayload | PaymentPayloadV1
AnyRequirements = PaymentRequirements | PaymentRequirementsV1

requester: ContextVar[str | None] = ContextVar("paywire_facilitator_requester", default=None)
"""Who is asking (the HTTP app sets the caller's address): the risk ``settle`` checkpoint's ``requester``."""


def normalize(payload: AnyPayload, requirements: AnyRequirements) -> tuple[PaymentPayload, PaymentRequirements, bool]:
    """Bring a v1 or v2 (payload, requirements) pair to the v2 shape; the bool says it was v1."""
    if isinstance(requirements, PaymentRequirementsV1):
        req, resource = requirements_v1_to_v2(requirements)
    else:
        req, resource = requirements, None
    if isinstance(payload, PaymentPayloadV1):
        # v1 payloads name only scheme + network; what they accept is the server's offer on that pair
        accepted = PaymentRequirements(
            scheme=payload.scheme, network=to_caip2(payload.network), amount=req.amount, asset=req.asset,
            pay_to=req.pay_to, max_timeout_seconds=req.max_timeout_seconds, extra=req.extra,
        )
        return PaymentPayload(x402_version=1, accepted=accepted, payload=payload.payload, resource=resource), req, True
    return payload, req, False


def in_request_naming(res: SettleResponse, requirements: AnyRequirements) -> SettleResponse:
    """A v1 request gets its answer's ``network`` in v1 naming (``base-sepolia``), as official facilitators
    answer; v2 keeps CAIP-2. A network v1 has no name for stays CAIP-2."""
    if not isinstance(requirements, PaymentRequirementsV1) or not res.network:
        return res
    if to_caip2_or_none(requirements.network) == res.network:
        return dataclasses.replace(res, network=requirements.network)
    v1 = to_v1_name(res.network)
    return dataclasses.replace(res, network=v1) if v1 is not None else res


class Facilitator:
    """Dispatches to scheme plugins by (scheme, network) of the accepted offer (checklist 41).

    ``store``: the settlement records the plugins write (for ``settlement()`` lookups); plugins that keep
    records also expose ``settlement_key(payload, requirements)`` and ``reconcile_once()``.
    ``risk``: the ``settle`` checkpoint (:mod:`paywire.risk`): a payment it denies is answered
    ``risk_denied`` before anything is signed; one already settled is never re-judged (retries stay idempotent).
    """

    def __init__(
        self, schemes: Sequence[FacilitatorScheme], *, extensions: Sequence[str] = (),
        store: SettlementStore | None = None, risk: RiskEngine | None = None,
    ) -> None:
        self.schemes = list(schemes)
        self.extensions = list(extensions)
        self.store = store
        self.risk = risk
        self.verdicts: Any = None
        """A ``paywire.audit.verdicts.VerdictTally`` when auditing is on: verify verdicts as bounded tallies."""

    def settlement_key(self, payload: AnyPayload, requirements: AnyRequirements) -> str | None:
        """The settlement record id of a payment (``GET /settlements/{id}``), if its plugin keeps records."""
        p, req, _ = normalize(payload, requirements)
        plugin = self._plugin(p)
        fn = getattr(plugin, "settlement_key", None)
        if fn is None:
            return None
        key = fn(p, req)
        return key if isinstance(key, str) else None

    async def settlement(self, settlement_id: str) -> Settlement | None:
        """The settlement record ``settlement_id`` (None without a store or when unknown)."""
        if self.store is None:
            return None
        return await self.store.get(settlement_id)

    async def reconcile_once(self) -> dict[str, int]:
        """One reconciliation pass over every plugin that keeps settlement records."""
        total: dict[str, int] = {}
        for p in self.schemes:
            fn = getattr(p, "reconcile_once", None)
            if fn is None:
                continue
            stats = await fn()
            for k, v in stats.items():
                total[k] = total.get(k, 0) + int(v)
        return total

    def _plugin(self, payload: PaymentPayload) -> FacilitatorScheme | None:
        for p in self.schemes:
            if handles(p, payload.accepted.scheme, payload.accepted.network):
                return p
        return None

    def supported(self) -> SupportedResponse:
        signers: dict[str, list[str]] = {}
        for p in self.schemes:
            signers.setdefault(p.network_pattern, [])
            for a in p.signer_addresses():
                if a not in signers[p.network_pattern]:
                    signers[p.network_pattern].append(a)
        extensions = list(self.extensions)
        for p in self.schemes:  # extensions a scheme implements itself (Permit2: eip2612GasSponsoring)
            extensions += [e for e in getattr(p, "extensions", ()) if e not in extensions]
        return SupportedResponse(kinds=tuple(supported_kinds(self.schemes)), extensions=tuple(extensions),
                                 signers={k: tuple(v) for k, v in signers.items()})

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        p, req, v1 = normalize(payload, requirements)
        plugin = self._plugin(p)
        if plugin is None:
            return VerifyResponse(False, "unsupported_scheme",
                                  invalid_message=f"no handler for {p.accepted.scheme} on {p.accepted.network}")
        try:
            verdict = await plugin.verify(p, req, v1=v1)
        except Exception as exc:  # a plugin bug must not become a 5xx
            return VerifyResponse(False, "unexpected_verify_error", invalid_message=f"{type(exc).__name__}: {exc}")
        if self.risk is not None and not verdict.is_valid:
            await self.risk.note_failure(self._risk_event(p, req), verdict.invalid_reason or "invalid")
        if self.verdicts is not None:  # bounded audit tallies (paywire.audit.verdicts)
            await self.verdicts.note(verdict.is_valid, verdict.invalid_reason, req.network)
        return verdict

    def _risk_event(self, p: PaymentPayload, req: PaymentRequirements) -> Event:
        from paywire.risk.model import Event

        server = default_registry.server(req.scheme, req.network)
        payer = server.payer(p.payload) if server is not None else None
        decimals = int(req.extra.get("decimals", 6)) if isinstance(req.extra.get("decimals", 6), int) else 6
        return Event("settle", payer=payer, payee=req.pay_to, amount=req.amount, decimals=decimals, asset=req.asset,
                     network=req.network, scheme=req.scheme, payment_key=str(p.payload.get("signature", "")) or None,
                     requester=requester.get())

    async def _risk_refusal(self, plugin: FacilitatorScheme, p: PaymentPayload,
                            req: PaymentRequirements) -> SettleResponse | None:
        """The ``settle`` checkpoint: a refusal to answer, or None. A payment with a settlement record already
        (a retry) is not judged again — which needs a settlement store (the facilitator's or its plugin's)."""
        assert self.risk is not None
        key_of = getattr(plugin, "settlement_key", None)
        store = self.store or getattr(plugin, "store", None)
        if store is not None and key_of is not None:
            key = key_of(p, req)
            if isinstance(key, str) and await store.get(key) is not None:
                return None
        event = self._risk_event(p, req)
        d = await self.risk.check(event)
        if d.allowed:
            return None
        return SettleResponse(False, "", req.network, payer=event.payer,
                              error_reason="risk_challenge" if d.action == "challenge" else "risk_denied",
                              error_message=f"refused by risk: {d.describe()}")

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        """Settle through the payment's plugin; the answer names the network as the request did (v1 or v2)."""
        return in_request_naming(await self._settle(payload, requirements), requirements)

    async def _settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        p, req, v1 = normalize(payload, requirements)
        plugin = self._plugin(p)
        if plugin is None:
            return SettleResponse(False, "", req.network, error_reason="unsupported_scheme",
                                  error_message=f"no handler for {p.accepted.scheme} on {p.accepted.network}")
        named = settling_for.set(identity_of(p.extensions))  # recorded with the claim (docs/identity.md)
        try:
            if self.risk is not None:
                refused = await self._risk_refusal(plugin, p, req)
                if refused is not None:
                    return refused
            settled = await plugin.settle(p, req, v1=v1)
            if self.risk is not None and settled.success:  # the payee's amount statistics
                await self.risk.note_amount(self._risk_event(p, req))
            return settled
        except Exception as exc:
            return SettleResponse(False, "", req.network, error_reason="unexpected_settle_error",
                                  error_message=f"{type(exc).__name__}: {exc}")
        finally:
            settling_for.reset(named)
