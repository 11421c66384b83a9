"""The flow for callers that are not HTTP servers (MCP tools, RPC handlers): one call in, one reply out.

    reply, payment = await run_paid(flow, request, handler)

``handler(payment)`` does the paid work and returns its result as a :class:`StoredResponse` (status, headers,
body): that is what the ledger records and what a replay of the same payment gets back. The plans of
:class:`~paywire.server.flow.PaymentFlow` are carried out here the way ``server/asgi.py`` carries them out for
ASGI, so a tool call gets the same claims, exactly-once execution under replay, settle modes and ledger as an
HTTP request. A failed settlement's reply never contains the handler's output.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from paywire.server.core import Reply, json_reply, merge_headers
from paywire.server.flow import (
    Forward,
    PaymentFlow,
    PaymentInfo,
    Respond,
    ResponseTooLarge,
    RunBuffered,
    RunStreaming,
)
from paywire.server.request import RequestInfo
from paywire.store.payments import StoredResponse

log = logging.getLogger("paywire.server")

Handler = Callable[[PaymentInfo | None], Awaitable[StoredResponse]]
"""Runs the paid work once; gets the payment (None for a free call)."""


async def _run(handler: Handler, payment: PaymentInfo | None,
               limit: int | None) -> StoredResponse | BaseException:
    try:
        result = await handler(payment)
    except Exception as exc:
        log.warning("paywire: paid handler raised %r", exc)
        return exc
    if limit is not None and len(result.body) > limit:
        return ResponseTooLarge(len(result.body), limit)
    return result


async def run_paid(flow: PaymentFlow, req: RequestInfo, handler: Handler) -> tuple[Reply, PaymentInfo | None]:
    """Run ``req`` through ``flow``: (the reply to give the caller, the payment when one was accepted)."""
    try:
        plan = await flow.begin(req)
    except Exception:
        log.exception("paywire: payment processing failed")
        return json_reply(503, {"error": "payment_processing_unavailable",
                                "message": "try again with the same payment"}), None
    if isinstance(plan, Respond):
        return plan.reply, None
    if isinstance(plan, Forward):
        out = await handler(plan.payment)
        return Reply(out.status, out.headers, out.body), plan.payment
    if isinstance(plan, RunBuffered):  # settle="after": run, then settle; the output is released only if paid
        try:
            result = await _run(handler, plan.payment, flow.max_record_bytes)
        except BaseException as exc:  # cancelled: record "not charged", then stop
            await asyncio.shield(plan.finish(exc))
            raise
        return await plan.finish(result), plan.payment
    assert isinstance(plan, RunStreaming)  # settle="before": already paid, run it now
    try:
        done = await _run(handler, plan.payment, None)
    except BaseException as exc:
        await asyncio.shield(plan.finish(exc))
        raise
    if isinstance(done, BaseException):
        await plan.finish(done)
        return flow.seller.handler_failed(), plan.payment
    # paid and run: the caller gets all of it; a replay only what fits the recording limit (else a 409)
    kept = done if len(done.body) <= flow.max_record_bytes else StoredResponse(done.status, done.headers, b"", False)
    await plan.finish(kept)
    return Reply(done.status, tuple(merge_headers(done.headers, plan.headers)), done.body), plan.payment
