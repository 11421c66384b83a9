"""The x402 ``bazaar`` discovery extension (digest §4.4; upstream ``extensions/bazaar.md``), without I/O.

Sellers declare what a paid route takes and returns in their 402's ``extensions["bazaar"]`` (``info`` plus the JSON
Schema that validates it); clients echo it into their payment; a facilitator that settled such a payment lists
the resource at ``GET /discovery/resources``. This module builds the declaration (:func:`http_discovery`), checks
one a payment carries (:func:`check_discovery`) and shapes the listing (:func:`listing_item`, :func:`listing`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["BAZAAR", "BODY_METHODS", "MCP_TRANSPORTS", "QUERY_METHODS", "check_discovery", "http_discovery", "listing",
           "listing_item", "mcp_discovery", "route_discovery", "route_template"]

BAZAAR = "bazaar"
DISCOVERY_OPTIONS = frozenset({"query_params", "body", "body_type", "headers", "output", "output_type", "mcp"})
"""What ``PaidRoute(discovery={...})`` may say (the keyword options of :func:`http_discovery`; ``mcp``: the keyword
options of :func:`mcp_discovery`, set by ``paywire.mcp.PaidTools`` for a paid tool)."""
MCP_TRANSPORTS = ("streamable-http", "sse")
QUERY_METHODS = ("GET", "HEAD", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
BODY_TYPES = ("json", "form-data", "text")
_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
_TEMPLATE = re.compile(r"^/[a-zA-Z0-9_/:.\-~%]+$")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::path)?\}")


def _output_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"type": {"type": "string"}, "example": {}}, "required": ["type"]}


def route_template(pattern: str) -> str | None:
    """A paywire route pattern (``/items/{id}``) as bazaar's ``routeTemplate`` (``/items/:id``); None for a static
    path or one with a glob."""
    if "*" in pattern or _PARAM.search(pattern) is None:
        return None
    template = _PARAM.sub(lambda m: ":" + m.group(1), pattern)
    return template if _TEMPLATE.fullmatch(template) and ".." not in template else None


def http_discovery(method: str, *, query_params: Mapping[str, Any] | None = None, body: Any = None,
                   body_type: str = "json", headers: Mapping[str, str] | None = None,
                   output: Any = None, output_type: str = "json", template: str | None = None) -> dict[str, Any]:
    """The ``bazaar`` extension object (``info`` + ``schema``) for an HTTP route.

    ``query_params`` / ``body``: example inputs; ``output``: an example answer. GET/HEAD/DELETE take query
    parameters, POST/PUT/PATCH a body (``body_type`` json, form-data or text)."""
    m = method.upper()
    if m not in QUERY_METHODS + BODY_METHODS:
        raise ValueError(f"bazaar describes {', '.join(QUERY_METHODS + BODY_METHODS)}, not {method!r}")
    info_input: dict[str, Any] = {"type": "http", "method": m}
    props: dict[str, Any] = {"type": {"type": "string", "const": "http"}}
    required = ["type", "method"]
    if m in QUERY_METHODS:
        props["method"] = {"type": "string", "enum": list(QUERY_METHODS)}
    else:
        if body_type not in BODY_TYPES:
            raise ValueError(f"body_type must be one of {BODY_TYPES}, not {body_type!r}")
        props["method"] = {"type": "string", "enum": list(BODY_METHODS)}
        props["bodyType"] = {"type": "string", "enum": list(BODY_TYPES)}
        props["body"] = {"type": "object"} if isinstance(body, Mapping) or body is None else {"type": "string"}
        info_input["bodyType"] = body_type
        info_input["body"] = dict(body) if isinstance(body, Mapping) else ({} if body is None else body)
        required += ["bodyType", "body"]
    if query_params:
        info_input["queryParams"] = dict(query_params)
    props["queryParams"] = {"type": "object", "additionalProperties": {"type": "string"}}
    if headers:
        info_input["headers"] = dict(headers)
    props["headers"] = {"type": "object", "additionalProperties": {"type": "string"}}
    if template is not None:
        props["pathParams"] = {"type": "object", "additionalProperties": {"type": "string"}}
    info: dict[str, Any] = {"input": info_input}
    if output is not None:
        info["output"] = {"type": output_type, "example": output}
    schema = {"$schema": _SCHEMA_URI, "type": "object",
              "properties": {"input": {"type": "object", "properties": props, "required": required,
                                       "additionalProperties": False},
                             "output": _output_schema()},
              "required": ["input"]}
    ext: dict[str, Any] = {"info": info, "schema": schema}
    if template is not None:
        ext["routeTemplate"] = template
    return ext


def mcp_discovery(tool: str, input_schema: Mapping[str, Any], *, description: str | None = None,
                  example: Mapping[str, Any] | None = None, transport: str | None = None,
                  output: Any = None, output_type: str = "json") -> dict[str, Any]:
    """The ``bazaar`` extension of a paid MCP tool (input type ``mcp``): its name, the JSON Schema of its
    arguments (the tool's own ``inputSchema``), an example call and output, and the MCP transport. The name is
    ``toolName``, as the pinned SDKs (x402 2.25.0, ``@x402/extensions`` 2.27.0) and the current upstream text
    write it (an older text wrote ``tool``; :func:`check_discovery` reads both)."""
    if not tool:
        raise ValueError("an MCP tool needs a name")
    if transport is not None and transport not in MCP_TRANSPORTS:
        raise ValueError(f"transport must be one of {MCP_TRANSPORTS}, not {transport!r}")
    info_input: dict[str, Any] = {"type": "mcp", "toolName": tool, "inputSchema": dict(input_schema)}
    if description:
        info_input["description"] = description
    if transport is not None:
        info_input["transport"] = transport
    if example is not None:
        info_input["example"] = dict(example)
    info: dict[str, Any] = {"input": info_input}
    if output is not None:
        info["output"] = {"type": output_type, "example": output}
    props = {"type": {"type": "string", "const": "mcp"}, "toolName": {"type": "string"},
             "description": {"type": "string"}, "transport": {"type": "string", "enum": list(MCP_TRANSPORTS)},
             "inputSchema": {"type": "object"}, "example": {"type": "object"}}
    schema = {"$schema": _SCHEMA_URI, "type": "object",
              "properties": {"input": {"type": "object", "properties": props,
                                       "required": ["type", "toolName", "inputSchema"],
                                       "additionalProperties": False},
                             "output": _output_schema()},
              "required": ["input"]}
    return {"info": info, "schema": schema}


def route_discovery(route: Any, method: str | None = None) -> dict[str, Any]:
    """The ``bazaar`` extension for a paid route (``PaidRoute.discovery``: True or a mapping of
    :func:`http_discovery`'s keyword options, or ``{"mcp": {...}}`` for a paid MCP tool); ``method``: the
    request's (a route may take several)."""
    opts: dict[str, Any] = dict(route.discovery) if isinstance(route.discovery, Mapping) else {}
    if isinstance(opts.get("mcp"), Mapping):
        return mcp_discovery(**opts["mcp"])
    methods = sorted(m for m in route.methods if m != "*")
    m = (method or "").upper()
    if m == "HEAD" or m not in QUERY_METHODS + BODY_METHODS or (methods and m not in methods):
        m = next((x for x in methods if x in QUERY_METHODS + BODY_METHODS), "GET")
    return http_discovery(m, template=route_template(route.pattern), **opts)


def check_discovery(ext: Any) -> str | None:
    """What is wrong with a ``bazaar`` extension a payment carries (None: fine to list). Checks the shape the
    spec requires of ``info`` (the facilitator does not run arbitrary JSON Schemas)."""
    if not isinstance(ext, Mapping):
        return "bazaar must be an object"
    info, schema = ext.get("info"), ext.get("schema")
    if not isinstance(info, Mapping) or not isinstance(schema, Mapping):
        return "bazaar needs info and schema objects"
    inp = info.get("input")
    if not isinstance(inp, Mapping):
        return "bazaar info.input must be an object"
    kind = inp.get("type")
    if kind == "http":
        method = inp.get("method")
        if method in QUERY_METHODS:
            return None if isinstance(inp.get("queryParams", {}), Mapping) else "queryParams must be an object"
        if method in BODY_METHODS:
            if inp.get("bodyType") not in BODY_TYPES or "body" not in inp:
                return "a body method needs bodyType (json, form-data, text) and body"
            return None
        return f"unknown method {method!r}"
    if kind == "mcp":
        name = inp.get("toolName", inp.get("tool"))  # toolName (SDKs, current text); tool (older text)
        if not isinstance(name, str) or not name or not isinstance(inp.get("inputSchema"), Mapping):
            return "an MCP tool needs toolName and inputSchema"
        return None
    return f"unknown input type {kind!r}"


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def listing_item(resource: str, kind: str, x402_version: int, accepts: Sequence[Mapping[str, Any]],
                 updated_at: float, *, description: str | None = None, mime_type: str | None = None,
                 extensions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One ``items[]`` entry of ``/discovery/resources`` (``lastUpdated`` as ISO 8601, as both SDKs read it)."""
    item: dict[str, Any] = {"resource": resource, "type": kind, "x402Version": x402_version,
                            "accepts": [dict(a) for a in accepts], "lastUpdated": iso_time(updated_at)}
    if description:
        item["description"] = description
    if mime_type:
        item["mimeType"] = mime_type
    if extensions:
        item["extensions"] = dict(extensions)
    return item


def listing(items: Sequence[Mapping[str, Any]], limit: int, offset: int, total: int) -> dict[str, Any]:
    """The ``/discovery/resources`` answer."""
    return {"x402Version": 2, "items": list(items), "pagination": {"limit": limit, "offset": offset, "total": total}}
