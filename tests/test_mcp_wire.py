"""The MCP payment mappings without I/O (``paywire.mcp.wire``, ``paywire.mcp.mpp``): what a tool call becomes
for the seller flow, what the flow's replies become for the client, and back again for the buyer engine."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from paywire.client.core import parse_settlement, read_challenge
from paywire.mcp.mpp import (
    MPP_CREDENTIAL,
    MPP_RECEIPT,
    RpcError,
    credential_authorization,
    credential_meta,
    error_as_http,
)
from paywire.mcp.wire import (
    TOOL_RESULT,
    X402_PAYMENT,
    X402_PAYMENT_RESPONSE,
    payment_meta,
    reply_result,
    result_as_http,
    tool_output,
    tool_request,
)
from paywire.mpp.challenge import Challenge, ChallengeBinder, parse_www_authenticate
from paywire.mpp.credential import ChallengeEcho, Credential, parse_authorization
from paywire.mpp.receipt import Receipt
from paywire.server.core import Reply, json_reply
from paywire.x402.codec import encode_header

REQUIRED = {"x402Version": 2, "error": "Payment required", "resource": {"url": "mcp://tool/t"},
            "accepts": [{"scheme": "exact", "network": "eip155:84532", "amount": "10000",
                         "asset": "0x" + "11" * 20, "payTo": "0x" + "22" * 20, "maxTimeoutSeconds": 60,
                         "extra": {"name": "USD Coin", "version": "2"}}]}
SETTLED = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:84532", "payer": "0x" + "33" * 20}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from([X402_PAYMENT, MPP_CREDENTIAL, "progressToken", "other"]), json_values,
                       max_size=3))
def test_any_meta_becomes_a_request_without_raising(meta: dict[str, Any]) -> None:
    """Whatever a client puts in ``_meta``, the seller gets a request (the flow then refuses a bad payment with
    a 402 saying why), never an exception."""
    req = tool_request("weather", meta)
    assert req.path == "/mcp/tools/weather", "the tool's route path changed"
    assert (meta.get(X402_PAYMENT) is not None) == ("payment-signature" in req.headers), "x402 payment not carried"
    assert (meta.get(MPP_CREDENTIAL) is not None) == ("authorization" in req.headers), "MPP credential not carried"


def test_a_tool_name_is_one_path_segment() -> None:
    assert tool_request("a/b c", None).path == "/mcp/tools/a%2Fb%20c", "a tool name escaped its path segment"


def test_the_402_becomes_the_x402_payment_required_result() -> None:
    reply = Reply(402, (("PAYMENT-REQUIRED", encode_header(REQUIRED)), ("content-type", "application/json")), b"{}")
    result = reply_result(reply)
    assert isinstance(result, dict) and result["isError"] is True, "not an error result"
    assert result["structuredContent"] == REQUIRED, "structuredContent is not the PaymentRequired"
    assert json.loads(result["content"][0]["text"]) == REQUIRED, "content[0].text is not the same JSON"


def test_a_paid_reply_carries_the_tool_result_and_the_settlement() -> None:
    stored = tool_output({"content": [{"type": "text", "text": "sunny"}], "isError": False})
    reply = Reply(200, (*stored.headers, ("PAYMENT-RESPONSE", encode_header(SETTLED))), stored.body)
    result = reply_result(reply)
    assert isinstance(result, dict), "a paid reply became an error"
    assert result["content"][0]["text"] == "sunny", "the tool's output was changed"
    assert result["_meta"][X402_PAYMENT_RESPONSE] == SETTLED, "no settlement in _meta"


def test_a_tool_error_is_recorded_as_not_chargeable() -> None:
    stored = tool_output({"content": [{"type": "text", "text": "boom"}], "isError": True})
    assert stored.status >= 400, "a tool error would be charged (status < 400)"
    assert dict(stored.headers)["content-type"] == TOOL_RESULT, "not recorded as a tool result"


def test_a_retry_answer_keeps_its_status_for_the_buyer() -> None:
    """503 'payment in progress' → httpStatus 503 → the buyer engine resends the same payment."""
    result = reply_result(json_reply(503, {"error": "payment_in_progress", "message": "retry"}))
    assert isinstance(result, dict) and result["structuredContent"]["httpStatus"] == 503, "status lost"
    status, _, _ = result_as_http(result)
    assert status == 503, f"the buyer reads {status}, not 503"


def test_the_buyer_reads_a_payment_required_result_as_a_402() -> None:
    status, headers, body = result_as_http({"isError": True, "content": [{"type": "text",
                                                                         "text": json.dumps(REQUIRED)}]})
    assert status == 402, f"a PaymentRequired in content[0].text read as {status}"
    assert read_challenge(headers, body).options[0].requirements.amount == 10000, "the offer was lost"


def test_the_buyer_reads_a_paid_result_with_its_settlement() -> None:
    status, headers, _ = result_as_http({"content": [], "_meta": {X402_PAYMENT_RESPONSE: SETTLED}})
    assert status == 200, f"a paid result read as {status}"
    settlement = parse_settlement(headers)
    assert settlement is not None and settlement.transaction == SETTLED["transaction"], "settlement lost"


def test_a_tool_error_without_settlement_is_not_read_as_paid() -> None:
    status, _, _ = result_as_http({"isError": True, "content": [{"type": "text", "text": "boom"}]})
    assert status >= 400, f"an unpaid tool error read as {status}"


def test_the_x402_payment_header_round_trips_into_meta() -> None:
    payload = {"x402Version": 2, "accepted": REQUIRED["accepts"][0], "payload": {"signature": "0x00"}}
    meta = payment_meta({"PAYMENT-SIGNATURE": encode_header(payload)})
    assert meta == {X402_PAYMENT: payload}, "the payment did not land in _meta['x402/payment']"


def _challenge() -> Challenge:
    binder = ChallengeBinder([os.urandom(32)])
    return Challenge.create(binder, realm="tools.test", method="evm", intent="charge",
                            request={"amount": "10000", "currency": "0x" + "11" * 20},
                            expires="2030-01-01T00:00:00Z", opaque={"_mpp_nonce": "abc"})


def test_the_mpp_credential_round_trips_between_meta_and_authorization() -> None:
    """Native JSON in ``_meta`` ⇄ ``Authorization: Payment`` with base64url ``request``/``opaque``: the echo
    the seller checks is byte-for-byte the challenge it issued."""
    c = _challenge()
    authorization = Credential(ChallengeEcho.of(c), {"signature": "0x01"}, "did:pkh:eip155:1:0x" + "33" * 20
                               ).to_authorization()
    meta = credential_meta(authorization)
    assert meta["challenge"]["request"] == dict(c.request), "request is not native JSON in _meta"
    back = parse_authorization(credential_authorization(meta))
    assert back.challenge == ChallengeEcho.of(c), "the echo changed on its way through _meta"
    assert back.payload == {"signature": "0x01"}, "the payload changed"


def test_the_mpp_error_round_trips_into_a_402_the_buyer_reads() -> None:
    c = _challenge()
    reply = Reply(402, (("www-authenticate", c.to_header()), ("content-type", "application/problem+json")),
                  json.dumps({"type": "https://paymentauth.org/problems/payment-required"}).encode())
    error = reply_result(reply, "mpp")
    assert isinstance(error, RpcError) and error.code == -32042, f"not -32042: {error}"
    assert error.data["challenges"][0]["request"] == dict(c.request), "request is not native JSON"
    http = error_as_http(error.code, error.data)
    assert http is not None and http[0] == 402, "the buyer does not read it as a 402"
    [again] = parse_www_authenticate(http[1]["www-authenticate"])
    assert again == c, "the challenge changed on its way through the JSON-RPC error"


def test_a_presented_credential_that_fails_is_minus_32043() -> None:
    c = _challenge()
    body = json.dumps({"type": "https://paymentauth.org/problems/verification-failed", "detail": "bad sig"})
    reply = Reply(402, (("www-authenticate", c.to_header()),), body.encode())
    error = reply_result(reply, "mpp", presented=True)
    assert isinstance(error, RpcError) and error.code == -32043, f"not -32043: {error}"
    assert error.data["failure"] == {"reason": "verification-failed", "detail": "bad sig"}, "no failure reason"


def test_an_mpp_receipt_reaches_meta_and_back() -> None:
    receipt = Receipt.success("evm", "0x" + "ab" * 32, now=1_700_000_000, challenge_id="cid")
    stored = tool_output({"content": [], "isError": False})
    result = reply_result(Reply(200, (*stored.headers, ("Payment-Receipt", receipt.to_header())), stored.body))
    assert isinstance(result, dict) and result["_meta"][MPP_RECEIPT] == receipt.to_wire(), "receipt not in _meta"
    _, headers, _ = result_as_http(result)
    assert Receipt.from_header(headers["payment-receipt"]) == receipt, "the buyer does not read the receipt"


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_any_mpp_credential_value_maps_without_raising(value: Any) -> None:
    assert credential_authorization(value).startswith("Payment "), "not an Authorization value"
