"""Paid MCP tool calls on the wire, sans-I/O: plain dicts in, plain dicts out (no MCP SDK import).

The x402 MCP transport (``transports-v2/mcp.md``): a tool that needs paying answers a tool result with
``isError: true`` whose ``structuredContent`` is the ``PaymentRequired`` object and whose ``content[0].text`` is
the same object as JSON; the client retries with the ``PaymentPayload`` in ``params._meta["x402/payment"]``; a
paid result carries the ``SettleResponse`` in ``result._meta["x402/payment-response"]``.

The seller flow speaks HTTP shapes (a request's headers in, a :class:`~paywire.server.core.Reply` out), so a tool
call is mapped onto them here: :func:`tool_request` (the ``_meta`` payment becomes the ``PAYMENT-SIGNATURE``
header of a request for ``POST /mcp/tools/<name>``), :func:`tool_output` (the tool's result as the response the
ledger records), and :func:`reply_result` (the flow's reply as a tool result). The buyer goes the other way with
:func:`result_as_http` and :func:`payment_meta`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from paywire.errors import WireError
from paywire.mcp.mpp import (
    MPP_CREDENTIAL,
    MPP_RECEIPT,
    RpcError,
    credential_authorization,
    credential_meta,
    receipt_header,
    receipt_object,
    reply_error,
)
from paywire.mpp.receipt import HEADER as RECEIPT_HEADER
from paywire.server.core import Reply
from paywire.server.request import RequestInfo
from paywire.x402.codec import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_header,
    encode_header,
)

if TYPE_CHECKING:
    from paywire.store.payments import StoredResponse

X402_PAYMENT = "x402/payment"
"""``params._meta`` key of the x402 ``PaymentPayload``."""
X402_PAYMENT_RESPONSE = "x402/payment-response"
"""``result._meta`` key of the x402 ``SettleResponse``."""
TOOL_RESULT = "application/vnd.paywire.mcp-tool-result+json"
"""Content type under which the ledger records a tool's result (a ``CallToolResult`` as JSON)."""
TOOLS_PATH = "/mcp/tools/"
"""The path a tool call takes in the seller's route table and ledger: ``POST /mcp/tools/<name>``."""
TOOL_ERROR_STATUS = 422
"""Status under which a tool's own error result is recorded: >= 400, so the payment is not charged."""
Signal = Literal["x402", "mpp"]
"""How a tool asks for payment: the x402 tool result, or the MPP JSON-RPC error ``-32042``."""


def tool_path(name: str) -> str:
    """``/mcp/tools/<name>``, the route path of a tool (its name percent-encoded)."""
    return TOOLS_PATH + quote(name, safe="")


def tool_url(name: str) -> str:
    """The x402 resource URL of a tool, as the official MCP bindings name it (``mcp://tool/<name>``)."""
    return f"mcp://tool/{name}"


def _payment_header(payment: Any) -> str:
    """The ``_meta`` payment as a ``PAYMENT-SIGNATURE`` value; anything unusable becomes a value the flow
    refuses with a 402 saying why (never a crash)."""
    if isinstance(payment, str):
        text = payment
        try:
            payment = json.loads(text)
        except ValueError:
            return text
    if isinstance(payment, Mapping):
        try:
            return encode_header(payment)
        except WireError:
            pass
    return "not-a-payment-payload"


def call_binding(name: str, arguments: Mapping[str, Any] | None) -> bytes:
    """The bytes that stand for one tool call (its name and arguments, canonical JSON): the "body" of the
    request the flow sees, so an MPP challenge binds them through its ``digest`` exactly as an HTTP challenge
    binds its request body. A credential paid for one tool (or other arguments) does not buy another call.

    ``arguments`` must be JSON-able (the seller converts validated arguments first); keys are sorted."""
    return json.dumps({"arguments": dict(arguments or {}), "tool": name}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False, default=str).encode()


def tool_request(name: str, meta: Mapping[str, Any] | None,
                 arguments: Mapping[str, Any] | None = None) -> RequestInfo:
    """The request a call of tool ``name`` with ``arguments`` is to the seller flow, with the payment of its
    ``_meta``; its body is :func:`call_binding` (what an MPP challenge's digest binds)."""
    headers: dict[str, str] = {}
    if meta:
        payment = meta.get(X402_PAYMENT)
        if payment is not None:
            headers[PAYMENT_SIGNATURE.lower()] = _payment_header(payment)
        credential = meta.get(MPP_CREDENTIAL)
        if credential is not None:
            headers["authorization"] = credential_authorization(credential)
    return RequestInfo("POST", tool_path(name), tool_url(name), headers, body=call_binding(name, arguments))


def tool_output(result: Mapping[str, Any]) -> StoredResponse:
    """A tool's ``CallToolResult`` (as a dict) as the response the flow records: 200, or 422 when the tool
    reported an error (``isError``: not charged)."""
    from paywire.store.payments import StoredResponse  # a dataclass; the store module loads a driver

    status = TOOL_ERROR_STATUS if result.get("isError") else 200
    body = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()
    return StoredResponse(status, (("content-type", TOOL_RESULT),), body)


def _text_result(obj: Mapping[str, Any], *, error: bool = True) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": json.dumps(obj, separators=(",", ":"))}],
            "structuredContent": dict(obj), "isError": error}


def _decoded(reply: Reply, name: str) -> dict[str, Any] | None:
    raw = reply.header(name)
    if raw is None:
        return None
    try:
        return decode_header(raw)
    except WireError:
        return None


def payment_required_result(payment_required: Mapping[str, Any],
                            settlement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The x402 "payment required" tool result: the object in ``structuredContent`` and ``content[0].text``;
    a failed settlement's ``SettleResponse`` in ``_meta``."""
    result = _text_result(payment_required)
    if settlement is not None:
        result["_meta"] = {X402_PAYMENT_RESPONSE: dict(settlement)}
    return result


def signal_of(meta: Mapping[str, Any] | None, default: Signal) -> Signal:
    """Answer in the protocol the call paid with; an unpaid call gets the tool's ``default``."""
    if meta and meta.get(MPP_CREDENTIAL) is not None:
        return "mpp"
    if meta and meta.get(X402_PAYMENT) is not None:
        return "x402"
    return default


def reply_result(reply: Reply, signal: Signal = "x402", *, presented: bool = False) -> dict[str, Any] | RpcError:
    """The flow's reply to a tool call as the ``CallToolResult`` (dict) to send, or the MPP error to raise.

    * the tool's recorded result (paid, replayed, or its own error, not charged), with the settlement in
      ``_meta["x402/payment-response"]`` when paid;
    * a 402: the x402 ``PaymentRequired`` (fresh challenge with the reason; after a failed settlement, the failed
      ``SettleResponse`` too — never the tool's output); with ``signal="mpp"`` (or when the tool offers no x402)
      the MPP error ``-32042`` (``-32043``/``-32602`` when a ``presented`` credential was refused);
    * anything else (payment in progress, settlement pending, conflict …): an error result whose
      ``structuredContent`` is the flow's JSON answer plus ``httpStatus``, so a client knows whether to retry
      with the same payment (503) or not.
    """
    settlement = _decoded(reply, PAYMENT_RESPONSE)
    if reply.header("content-type") == TOOL_RESULT:
        result: dict[str, Any] = json.loads(reply.body)
        meta = dict(result.get("_meta") or {})
        if settlement is not None:
            meta[X402_PAYMENT_RESPONSE] = settlement
        receipt = receipt_object(reply)
        if receipt is not None:
            meta[MPP_RECEIPT] = receipt
        if meta:
            result["_meta"] = meta
        return result
    required = _decoded(reply, PAYMENT_REQUIRED) if reply.status == 402 else None
    if signal == "mpp" or required is None:
        error = reply_error(reply, presented=presented)
        if error is not None:
            return error
    if required is not None:
        return payment_required_result(required, settlement)
    try:
        body = json.loads(reply.body) if reply.body else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    body.setdefault("error", "payment_error")
    body["httpStatus"] = reply.status
    result = _text_result(body)
    if settlement is not None:
        result["_meta"] = {X402_PAYMENT_RESPONSE: settlement}
    return result


# ------------------------------------------------------------------------------------------------ buyer side


def payment_required_of(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The x402 ``PaymentRequired`` an error result carries: ``structuredContent`` first, else
    ``content[0].text`` parsed as JSON; None when it carries none."""
    if not result.get("isError"):
        return None
    candidates: list[Any] = [result.get("structuredContent")]
    content = result.get("content") or []
    if content and isinstance(content[0], Mapping) and content[0].get("type") == "text":
        with contextlib.suppress(ValueError):
            candidates.append(json.loads(str(content[0].get("text", ""))))
    for obj in candidates:
        if isinstance(obj, Mapping) and "x402Version" in obj and isinstance(obj.get("accepts"), list) \
                and obj["accepts"]:
            return dict(obj)
    return None


def result_as_http(result: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """A tool result as the buyer engine reads HTTP answers: (status, lower-case headers, body).

    402 + ``payment-required`` for an x402 payment signal; ``payment-response`` (x402) and ``payment-receipt``
    (MPP) from ``_meta``; the
    ``httpStatus`` a paywire seller puts on its payment errors (503: retry the same payment); a tool's error
    without a settlement is 422 (not paid); anything else 200."""
    headers: dict[str, str] = {}
    meta = result.get("_meta")
    settlement = meta.get(X402_PAYMENT_RESPONSE) if isinstance(meta, Mapping) else None
    if isinstance(settlement, Mapping):
        with contextlib.suppress(WireError):
            headers[PAYMENT_RESPONSE.lower()] = encode_header(settlement)
    receipt = receipt_header(meta.get(MPP_RECEIPT)) if isinstance(meta, Mapping) else None
    if receipt is not None:
        headers[RECEIPT_HEADER.lower()] = receipt
    body = json.dumps(result.get("structuredContent") or {}, separators=(",", ":")).encode()
    if not result.get("isError"):
        return 200, headers, body
    required = payment_required_of(result)
    if required is not None:
        with contextlib.suppress(WireError):
            headers[PAYMENT_REQUIRED.lower()] = encode_header(required)
        return 402, headers, body
    structured = result.get("structuredContent")
    status = structured.get("httpStatus") if isinstance(structured, Mapping) else None
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status, headers, body
    if isinstance(settlement, Mapping) and settlement.get("success") is True:
        return 200, headers, body  # the tool failed after the payment settled: it was paid
    return TOOL_ERROR_STATUS, headers, body


def payment_meta(headers: Mapping[str, str]) -> dict[str, Any]:
    """The ``_meta`` entries carrying the payment the buyer engine would send as ``headers``."""
    meta: dict[str, Any] = {}
    for name, value in headers.items():
        if name.lower() == PAYMENT_SIGNATURE.lower():
            meta[X402_PAYMENT] = decode_header(value)
        elif value[:8].lower() == "payment ":  # MPP: Authorization (or the field the challenge named)
            meta[MPP_CREDENTIAL] = credential_meta(value)
    return meta
