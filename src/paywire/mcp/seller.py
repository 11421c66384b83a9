"""Paid MCP tools on a FastMCP server (the official Python MCP SDK), through the same seller flow as HTTP.

    from mcp.server.fastmcp import FastMCP
    from paywire.mcp import PaidTools

    mcp = FastMCP("weather")
    tools = PaidTools(mcp, "http://127.0.0.1:4020", pay_to="0x…", network="eip155:84532")

    @tools.paid_tool(price="$0.01", description="Current weather")
    async def weather(city: str) -> dict:
        return {"city": city, "sky": "clear"}

    mcp.run()                      # stdio; or mcp.run("streamable-http")

A call without payment gets the x402 ``PaymentRequired`` tool result; a call with ``_meta["x402/payment"]`` is
claimed, verified, run and settled by :class:`~paywire.server.flow.PaymentFlow` exactly as an HTTP request for
``POST /mcp/tools/<name>`` would be: one payment runs the tool at most once (copies get the recorded result),
``settle="after"`` releases the result only once paid (a failed settlement returns the payment error, never the
output; a tool error is not charged), ``settle="before"`` settles first. Sales land in the same ledger.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Unpack

from mcp import types
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.utilities.func_metadata import func_metadata
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, ErrorData, TextContent

from paywire.errors import ConfigError
from paywire.mcp.mpp import MPP_CREDENTIAL, RpcError
from paywire.mcp.wire import (
    Signal,
    reply_result,
    signal_of,
    tool_output,
    tool_path,
    tool_request,
    tool_url,
)
from paywire.server.config import SellerConfig, SellerOptions
from paywire.server.core import OfferLike, PaidRoute, SettleMode
from paywire.server.flow import PaymentFlow, PaymentInfo
from paywire.server.invoke import run_paid
from paywire.server.pricing import Price, PriceFn
from paywire.server.setup import FacilitatorArg, LazyFlow, seller_config

F = TypeVar("F", bound=Callable[..., Any])
ToolRun = Callable[[PaymentInfo | None], typing.Awaitable[Mapping[str, Any]]]
"""Runs a tool once (gets the payment) and returns its ``CallToolResult`` as a dict."""

CONTEXT_PARAM = "paywire_mcp_context"
RPC_ERROR_META = "paywire/rpc-error"
"""Marks a tool result that stands for a JSON-RPC error (FastMCP turns a tool's exceptions into error results;
the handler installed by :func:`answer_rpc_errors` raises it as the error instead)."""
_payment: contextvars.ContextVar[PaymentInfo | None] = contextvars.ContextVar("paywire_mcp_payment", default=None)


def current_payment() -> PaymentInfo | None:
    """Inside a paid tool: the payment that pays for this call (payer, amount, network, transaction when
    ``settle="before"``)."""
    return _payment.get()


def _context_param(fn: Callable[..., Any], hints: Mapping[str, Any]) -> str | None:
    """The tool's own ``Context`` parameter, if it has one."""
    for name, hint in hints.items():
        if name != "return" and inspect.isclass(hint) and issubclass(hint, Context):
            return name
    return None


def _request_meta(ctx: Any) -> dict[str, Any] | None:
    """``params._meta`` of the current tool call (FastMCP keeps keys it does not know in ``model_extra``)."""
    try:
        meta = ctx.request_context.meta
    except (AttributeError, ValueError):
        return None
    if meta is None:
        return None
    return dict(meta.model_extra or {})


PAYMENT_CAPABILITY: dict[str, Any] = {"methods": {"evm": {"intents": ["charge"]}}}
"""What ``InitializeResult.capabilities.experimental.payment`` advertises for MPP tools (the draft's SHOULD)."""


def answer_rpc_errors(server: FastMCP) -> None:
    """Let paid tools of ``server`` answer JSON-RPC errors (MPP's ``-32042``): FastMCP's ``tools/call`` handler
    is wrapped once to raise the error a marked result stands for; the server also advertises MPP in
    ``capabilities.experimental.payment``."""
    low = server._mcp_server  # FastMCP keeps its low-level server here (mcp 1.x)
    inner = low.request_handlers[types.CallToolRequest]
    if getattr(inner, "_paywire", False):
        return
    options = low.create_initialization_options

    def with_payment(notification_options: Any = None,
                     experimental_capabilities: dict[str, dict[str, Any]] | None = None) -> Any:
        return options(notification_options, {"payment": PAYMENT_CAPABILITY, **(experimental_capabilities or {})})

    low.create_initialization_options = with_payment  # type: ignore[method-assign]

    async def handler(req: types.CallToolRequest) -> types.ServerResult:
        result = await inner(req)
        root = result.root
        if isinstance(root, CallToolResult) and root.meta and RPC_ERROR_META in root.meta:
            raise McpError(ErrorData.model_validate(root.meta[RPC_ERROR_META]))
        return result

    handler._paywire = True  # type: ignore[attr-defined]
    low.request_handlers[types.CallToolRequest] = handler


def rpc_error(error: RpcError) -> McpError:
    return McpError(ErrorData(code=error.code, message=error.message, data=dict(error.data)))


def _jsonable(arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated tool arguments (pydantic models, dates …) as plain JSON values, for the call's binding."""
    from pydantic_core import to_jsonable_python

    return {str(k): to_jsonable_python(v, fallback=repr) for k, v in (arguments or {}).items()}


def _as_result(value: Any) -> CallToolResult:
    if isinstance(value, CallToolResult):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        content, structured = value
        return CallToolResult(content=list(content), structuredContent=structured, isError=False)
    return CallToolResult(content=list(value), isError=False)


class PaidTools:
    """Prices tools on a FastMCP ``server``; one :class:`PaymentFlow` (store, facilitator, ledger) for all.

    ``facilitator`` and the options are the seller's (:class:`~paywire.server.config.SellerConfig`: ``pay_to``,
    ``network``, ``assets``, ``store``, timeouts …), the same as for the HTTP middleware. The flow is built at
    the first paid call (or :meth:`startup`); declare every paid tool before that. ``public_url``: where
    clients reach this MCP server (``https://api.example.com/mcp``); when given, it is each tool's x402
    resource URL (the bazaar names a tool by this URL and its name) instead of ``mcp://tool/<name>``.
    """

    def __init__(self, server: FastMCP | None = None, facilitator: FacilitatorArg | None = None, *,
                 config: SellerConfig | None = None, public_url: str | None = None,
                 **options: Unpack[SellerOptions]) -> None:
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url must be an http(s) URL, not {public_url!r}")
        self.server = server
        self.public_url = public_url
        self._routes: list[PaidRoute] = []
        self._names: dict[str, Signal] = {}
        self._lazy = LazyFlow(lambda: tuple(self._routes), seller_config(config, facilitator, options), None)
        self._built = False

    @property
    def flow(self) -> PaymentFlow:
        """The seller flow of these tools (``flow.payments`` is the ledger)."""
        self._built = True
        return self._lazy.flow

    async def startup(self) -> None:
        """Open the store and check the prices against the facilitator now (else at the first paid call)."""
        await self.flow.startup()

    async def aclose(self) -> None:
        if self._built:
            await self.flow.aclose()

    def route(self, name: str, *, price: Price | PriceFn | None = None, offers: Sequence[OfferLike] = (),
              description: str = "", settle: SettleMode = "after",
              payment_identifier: bool | Literal["required"] = False, mpp: bool = False,
              signal: Signal | None = None, discovery: bool | Mapping[str, Any] = False,
              input_schema: Mapping[str, Any] | None = None) -> PaidRoute:
        """Price tool ``name`` (for servers that call :meth:`call` themselves, not through :meth:`paid_tool`).

        ``mpp=True`` also takes MPP ``evm/charge`` credentials (needs the seller's ``mpp_realm`` and
        ``mpp_secret``); ``signal`` is how an unpaid call is asked to pay (default: ``"mpp"`` when ``mpp``,
        else ``"x402"``); a call answers in the protocol it paid with. ``discovery``: publish the tool in the
        x402 bazaar (its payment request carries ``extensions["bazaar"]`` with input type ``mcp``, and a
        facilitator that settles it lists it); True, or ``{"example": {...}, "output": ..., "output_type": ...,
        "transport": "streamable-http" | "sse"}``; ``input_schema`` is the tool's arguments' JSON Schema."""
        if self._built:
            raise ConfigError(f"tool {name!r}: declare paid tools before the first paid call or startup()")
        if name in self._names:
            raise ConfigError(f"tool {name!r} is already priced")
        if signal == "mpp" and not mpp:
            raise ConfigError(f"tool {name!r}: signal='mpp' needs mpp=True")
        published: Mapping[str, Any] | bool = False
        if discovery:
            extra = dict(discovery) if isinstance(discovery, Mapping) else {}
            unknown = set(extra) - {"example", "output", "output_type", "transport"}
            if unknown:
                raise ConfigError(f"tool {name!r}: discovery takes example, output, output_type and transport, "
                                  f"not {sorted(unknown)}")
            schema = dict(input_schema) if input_schema is not None else {"type": "object", "properties": {}}
            published = {"mcp": {"tool": name, "input_schema": schema, "description": description or None, **extra}}
        route = PaidRoute(f"POST {tool_path(name)}", offers=tuple(offers), price=price, description=description,
                          settle=settle, payment_identifier=payment_identifier, x402_versions=(2,),
                          paywall=False, resource=self.public_url or tool_url(name), mpp=("evm",) if mpp else (),
                          discovery=published)
        self._routes.append(route)
        self._names[name] = signal or ("mpp" if mpp else "x402")
        return route

    async def call(self, name: str, meta: Mapping[str, Any] | None, run: ToolRun,
                   arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One call of priced tool ``name`` with the request's ``_meta``: the ``CallToolResult`` (dict) to send,
        or ``McpError`` raised for an MPP payment error (``-32042`` …).

        ``run`` is awaited at most once per payment, and only when the flow says so. ``arguments`` (the call's
        arguments) are bound into MPP challenges with the tool's name: a credential paid for one call does not
        buy a call of another tool or with other arguments."""
        default = self._names.get(name)
        if default is None:
            raise ConfigError(f"tool {name!r} has no price: declare it with route() or paid_tool()")

        async def handler(payment: PaymentInfo | None) -> Any:
            return tool_output(await run(payment))

        reply, _ = await run_paid(self.flow, tool_request(name, meta, _jsonable(arguments)), handler)
        signal = signal_of(meta, default)
        answer = reply_result(reply, signal, presented=(meta or {}).get(MPP_CREDENTIAL) is not None)
        if isinstance(answer, RpcError):
            raise rpc_error(answer)
        return answer

    def paid_tool(self, price: Price | PriceFn | None = None, *, name: str | None = None,
                  description: str | None = None, offers: Sequence[OfferLike] = (), settle: SettleMode = "after",
                  payment_identifier: bool | Literal["required"] = False, mpp: bool = False,
                  signal: Signal | None = None, title: str | None = None,
                  server: FastMCP | None = None, discovery: bool | Mapping[str, Any] = False) -> Callable[[F], F]:
        """Register the decorated function as a paid tool of the FastMCP server (``server=`` or the one given
        to :class:`PaidTools`); it stays callable as before. Its parameters, docstring and result conversion
        are FastMCP's; it may take a ``Context`` parameter; :func:`current_payment` tells it who paid. ``discovery``
        publishes it in the x402 bazaar with the ``inputSchema`` FastMCP lists for it (see :meth:`route`)."""
        target = server or self.server
        if target is None:
            raise ConfigError("paid_tool: give PaidTools a FastMCP server (or server=)")

        def decorate(fn: F) -> F:
            tool_name = name or fn.__name__
            doc = description if description is not None else (inspect.getdoc(fn) or "")
            schema = None
            if discovery:
                own_ctx = _context_param(fn, typing.get_type_hints(fn, include_extras=True))
                meta = func_metadata(fn, skip_names=[own_ctx] if own_ctx else [])
                schema = meta.arg_model.model_json_schema(by_alias=True)  # what tools/list shows for it
            self.route(tool_name, price=price, offers=offers, description=doc, settle=settle,
                       payment_identifier=payment_identifier, mpp=mpp, signal=signal, discovery=discovery,
                       input_schema=schema)
            if mpp:
                answer_rpc_errors(target)
            target.add_tool(self._wrap(fn, tool_name), name=tool_name, title=title, description=doc)
            return fn

        return decorate

    def _wrap(self, fn: Callable[..., Any], tool_name: str) -> Callable[..., Any]:
        """``fn`` with a ``Context`` parameter FastMCP fills in, returning the ``CallToolResult`` the flow gives."""
        hints = typing.get_type_hints(fn, include_extras=True)
        own_ctx = _context_param(fn, hints)
        ctx_name = own_ctx or CONTEXT_PARAM
        convert = func_metadata(fn, skip_names=[own_ctx] if own_ctx else [])
        is_async = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        async def tool(**kwargs: Any) -> CallToolResult:
            ctx = kwargs.get(ctx_name) if own_ctx else kwargs.pop(ctx_name, None)

            async def run(payment: PaymentInfo | None) -> dict[str, Any]:
                token = _payment.set(payment)
                try:
                    value = await fn(**kwargs) if is_async else fn(**kwargs)
                except Exception as exc:  # FastMCP's own wording for a failing tool; the flow does not charge
                    return CallToolResult(content=[TextContent(type="text", text=f"Error executing tool "
                                                                 f"{tool_name}: {exc}")], isError=True
                                          ).model_dump(mode="json", by_alias=True, exclude_none=True)
                finally:
                    _payment.reset(token)
                result = _as_result(convert.convert_result(value))
                return result.model_dump(mode="json", by_alias=True, exclude_none=True)

            arguments = {k: v for k, v in kwargs.items() if k != ctx_name}
            try:
                return CallToolResult.model_validate(await self.call(tool_name, _request_meta(ctx), run, arguments))
            except McpError as exc:  # raised again by the handler answer_rpc_errors installed
                return CallToolResult(content=[], isError=True,
                                      _meta={RPC_ERROR_META: exc.error.model_dump(mode="json", exclude_none=True)})

        sig = inspect.signature(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()]
        if own_ctx is None:
            params.append(inspect.Parameter(CONTEXT_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Context))
        tool.__signature__ = sig.replace(parameters=params, return_annotation=CallToolResult)  # type: ignore[attr-defined]
        tool.__annotations__ = {**{k: v for k, v in hints.items() if k != "return"},
                                ctx_name: Context, "return": CallToolResult}
        del tool.__wrapped__  # FastMCP must read our signature, not fn's
        return tool


__all__ = ["PaidTools", "ToolRun", "answer_rpc_errors", "current_payment"]
