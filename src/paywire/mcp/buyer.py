"""Pay MCP tools from an agent: an MCP ``ClientSession`` whose tool calls pay when the tool asks, within the
wallet's policy (budgets, approval hook, receipts ledger), through the same buyer engine as HTTP.

    async with ClientSession(read, write) as session:
        await session.initialize()
        paying = PayingSession(session, wallet, Policy(max_per_payment="$0.10", daily="$5"), server="weather")
        result = await paying.call_tool("weather", {"city": "Lisbon"})   # a CallToolResult, as before
        call = await paying.pay_tool("weather", {"city": "Lisbon"})      # … with its receipt and settlement

A tool that answers the x402 "payment required" result is paid and called again with the payment in
``_meta["x402/payment"]``; one that answers MPP's ``-32042`` error gets the credential in
``_meta["org.paymentauth/credential"]`` (``Policy(protocols=…)`` chooses when a tool offers both). The retry safety is the HTTP client's: a lost answer (MCP timeout, closed connection)
or a "try again" answer (a paywire seller's 503 ``httpStatus``) resends the *same* signed payment, so a flaky
connection never pays twice; every outcome is a row in the ledger. ``server`` names the MCP server for the
policy (per-host limits, allow lists) and the receipts (``mcp://<server>/tools/<name>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mcp import ClientSession
from mcp.shared.exceptions import McpError
from mcp.shared.session import ProgressFnT
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent

from paywire.client.config import BuyerConfig
from paywire.client.core import Receipt, Sent
from paywire.client.engine import Approver, Buyer, ExchangeBase, WalletLike
from paywire.client.policy import Policy
from paywire.mcp.mpp import MPP_CREDENTIAL, error_as_http
from paywire.mcp.wire import X402_PAYMENT, payment_meta, result_as_http
from paywire.x402.models import SettleResponse

REQUEST_TIMEOUT = 408  # the code the MCP SDK gives a request that timed out waiting for its answer


@dataclass(slots=True)
class ToolCall:
    """A tool call's answer with what paying for it left: the receipt (None when the tool was free) and the
    parsed settlement (``_meta["x402/payment-response"]``)."""

    result: CallToolResult
    receipt: Receipt | None = None
    settlement: SettleResponse | None = None


@dataclass(slots=True)
class _Answer:
    call: ToolCall
    status: int
    headers: dict[str, str]
    body: bytes


class _ToolExchange(ExchangeBase[_Answer]):
    """One tool call as the buyer engine's :class:`~paywire.client.engine.Exchange`."""

    def __init__(self, session: ClientSession, url: str, name: str, arguments: dict[str, Any] | None,
                 meta: Mapping[str, Any] | None, read_timeout: timedelta | None,
                 progress: ProgressFnT | None) -> None:
        given = meta or {}
        super().__init__(url, "CALL", paying=any(given.get(k) is not None for k in (X402_PAYMENT, MPP_CREDENTIAL)))
        self.session, self.name, self.arguments = session, name, arguments
        self.meta, self.read_timeout, self.progress = dict(meta or {}), read_timeout, progress

    async def send(self, extra_headers: Mapping[str, str] | None) -> _Answer:
        meta = {**self.meta, **payment_meta(extra_headers or {})}
        try:
            result = await self.session.call_tool(self.name, self.arguments, self.read_timeout, self.progress,
                                                  meta=meta or None)
        except McpError as exc:  # MPP asks for payment with a JSON-RPC error (-32042, -32043)
            http = error_as_http(exc.error.code, exc.error.data)
            if http is None:
                raise
            data = exc.error.data if isinstance(exc.error.data, dict) else None
            error = CallToolResult(content=[TextContent(type="text", text=exc.error.message)],
                                   structuredContent=data, isError=True)
            return _Answer(ToolCall(error), *http)
        status, headers, body = result_as_http(result.model_dump(mode="json", by_alias=True, exclude_none=True))
        return _Answer(ToolCall(result), status, headers, body)

    def status(self, response: _Answer) -> int:
        return response.status

    def headers(self, response: _Answer) -> Mapping[str, str]:
        return response.headers

    async def read(self, response: _Answer) -> bytes:
        return response.body

    async def discard(self, response: _Answer) -> None:
        return None

    def classify(self, exc: BaseException) -> Sent | None:
        if isinstance(exc, McpError) and exc.error.code in (REQUEST_TIMEOUT, CONNECTION_CLOSED):
            return Sent.MAYBE_SENT
        return None

    def attach(self, response: _Answer, receipt: Receipt, settlement: SettleResponse | None) -> None:
        response.call.receipt, response.call.settlement = receipt, settlement


class PayingSession:
    """Wraps an initialized MCP ``ClientSession``: :meth:`call_tool` pays tools that ask for payment.

    ``wallet``: a :class:`paywire.wallet.Wallet`, signing schemes, or a ready :class:`~paywire.client.Buyer`
    (then ``policy`` and the options are its own). ``store``: the receipts ledger (a database URL; None keeps
    them in memory, which a policy with budgets refuses). ``approve``: called for payments above the policy's
    approval threshold. Every other attribute is the session's.

    Raises the buyer's errors instead of returning an unpaid answer: ``PaymentRefused`` (policy),
    ``PaymentDeclined`` (approval hook), ``PaymentRejected`` (the server refused the payment),
    ``PaymentOutcomeUnknown`` (no answer after resending the same payment; its budget stays held).
    """

    def __init__(self, session: ClientSession, wallet: WalletLike | Buyer, policy: Policy | None = None, *,
                 server: str = "mcp", config: BuyerConfig | None = None, store: Any = None,
                 approve: Approver | None = None, max_retries: int | None = None) -> None:
        self.session = session
        self.server = server
        if isinstance(wallet, Buyer):
            self.buyer, self._owns = wallet, False
        else:
            options: dict[str, Any] = {"store": store}
            if approve is not None:
                options["approve"] = approve
            if max_retries is not None:
                options["max_retries"] = max_retries
            self.buyer, self._owns = Buyer(wallet, policy, config=config, **options), True

    def url_of(self, name: str) -> str:
        """How receipts and the policy name tool ``name`` of this server."""
        return f"mcp://{self.server}/tools/{name}"

    async def pay_tool(self, name: str, arguments: dict[str, Any] | None = None,
                       read_timeout_seconds: timedelta | None = None, progress_callback: ProgressFnT | None = None,
                       *, meta: dict[str, Any] | None = None) -> ToolCall:
        """Call tool ``name``; pay it if it asks (policy, approval, ledger); the answer with its receipt."""
        ex = _ToolExchange(self.session, self.url_of(name), name, arguments, meta, read_timeout_seconds,
                           progress_callback)
        answer = await self.buyer.handle(ex)
        return answer.call

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                        read_timeout_seconds: timedelta | None = None, progress_callback: ProgressFnT | None = None,
                        *, meta: dict[str, Any] | None = None) -> CallToolResult:
        """``ClientSession.call_tool``, paying when the tool asks for it."""
        return (await self.pay_tool(name, arguments, read_timeout_seconds, progress_callback, meta=meta)).result

    async def aclose(self) -> None:
        """Close the ledger if this session made the buyer (the MCP session is the caller's)."""
        if self._owns:
            await self.buyer.aclose()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.session, attr)


__all__ = ["PayingSession", "ToolCall"]
