"""The buyer's sans-I/O decisions: reading challenges, ranking options, building payments, retry safety."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from paywire.client.core import (
    Next,
    Sent,
    after_response,
    after_send_error,
    build_payment,
    challenge_error,
    rank_options,
    read_challenge,
    rejection_reason,
    with_payment_id,
)
from paywire.client.policy import Policy
from paywire.errors import WireError
from paywire.evm.assets import Asset
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_exact import ExactEvmClient
from paywire.x402.codec import encode_header

NET = "eip155:31337"
TOKEN = "0x" + "ab" * 20
OTHER = "0x" + "ef" * 20
PAYEE = "0x" + "cd" * 20
SIGNER = LocalSigner(b"\x01" * 32)
SCHEMES = [ExactEvmClient(SIGNER)]
POLICY = Policy(assets=[Asset(NET, TOKEN, "USD Coin", "2"), Asset(NET, OTHER, "Other", "1")])


def req(amount: int, asset: str = TOKEN, **kw) -> dict:
    d = {"scheme": "exact", "network": NET, "amount": str(amount), "asset": asset, "payTo": PAYEE,
         "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}}
    d.update(kw)
    return d


def v2_headers(*accepts: dict, extensions: dict | None = None) -> dict[str, str]:
    pr = {"x402Version": 2, "resource": {"url": "http://x/y"}, "accepts": list(accepts)}
    if extensions:
        pr["extensions"] = extensions
    return {"payment-required": encode_header(pr)}


def test_reads_v2_header_then_v1_body_else_fails() -> None:
    """Checklist 26."""
    c = read_challenge(v2_headers(req(5)), b"")
    assert c.version == 2 and c.options[0].requirements.amount == 5
    v1 = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [{
        "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "7", "resource": "http://x/y",
        "payTo": PAYEE, "maxTimeoutSeconds": 60, "asset": TOKEN, "extra": {"name": "USDC", "version": "2"}}]}
    c1 = read_challenge({}, json.dumps(v1).encode())
    assert c1.version == 1 and c1.options[0].requirements.network == "eip155:84532" and c1.options[0].v1
    with pytest.raises(WireError):
        read_challenge({}, b'{"error": "pay me"}')


def test_ranking_prefers_the_cheapest_acceptable_and_fundable_option() -> None:
    c = read_challenge(v2_headers(req(30_000), req(20_000), req(10_000, OTHER), req(1, scheme="upto")), b"")
    balances = {TOKEN: 10**9, OTHER: 5}  # the cheapest valid option is unfunded
    ranking = rank_options(c, "x", POLICY, SCHEMES, balance=lambda o: balances[o.requirements.asset])
    assert [cand.option.index for cand in ranking.candidates] == [1, 0]
    rules = {opt.index: r.rule for opt, r in ranking.refusals}
    assert rules == {2: "funds", 3: "scheme"}
    capped = rank_options(c, "x", Policy(assets=POLICY.assets, max_per_payment="$0.025"), SCHEMES)
    assert [cand.option.index for cand in capped.candidates] == [2, 1]


def test_payment_echoes_accepted_verbatim_and_adds_the_identifier() -> None:
    """Checklist 27-29, 37: `accepted` is the server's entry byte-for-byte (odd key order, unknown keys),
    the server's extensions are kept, the payment-identifier id is added."""
    odd = {"payTo": PAYEE, "scheme": "exact", "amount": "5", "network": NET, "asset": TOKEN.upper().replace("0X", "0x"),
           "maxTimeoutSeconds": 60, "extra": {"version": "2", "name": "USD Coin"}, "vendorField": [1, 2]}
    ext = {"payment-identifier": {"info": {"required": True}, "schema": {"type": "object"}},
           "bazaar": {"info": {"x": 1}}}
    c = read_challenge(v2_headers(odd, extensions=ext), b"")
    inner = asyncio.run(SCHEMES[0].create_payload(c.options[0].requirements))
    attempt = build_payment(c, c.options[0], inner, "pay_" + "a" * 32, ledger=SCHEMES[0].ledger_fields(inner))
    sent = json.loads(base64.b64decode(attempt.value))
    assert attempt.header == "PAYMENT-SIGNATURE"
    assert json.dumps(sent["accepted"]) == json.dumps(odd)
    assert sent["extensions"]["bazaar"] == {"info": {"x": 1}}
    assert sent["extensions"]["payment-identifier"]["info"] == {"required": True, "id": "pay_" + "a" * 32}
    assert attempt.payment_id == "pay_" + "a" * 32 and attempt.nonce and attempt.valid_before
    plain = read_challenge(v2_headers(req(5)), b"")
    no_ext = json.loads(base64.b64decode(build_payment(plain, plain.options[0], inner, "pay_x" * 5).value))
    assert "extensions" not in no_ext  # no identifier unless the server advertises the extension
    assert with_payment_id(None, "pay_" + "b" * 20) is None


def test_retry_decisions() -> None:
    """A lost answer or a 5xx resends the same payment (bounded); after that the outcome is unknown unless
    the payment never left; a 402 is a rejection, never success."""
    assert after_send_error(Sent.MAYBE_SENT, 0, 2, True) is Next.RESEND
    assert after_send_error(Sent.MAYBE_SENT, 2, 2, True) is Next.UNKNOWN
    assert after_send_error(Sent.NOT_SENT, 2, 2, False) is Next.UNSENT
    assert after_send_error(Sent.NOT_SENT, 2, 2, True) is Next.UNKNOWN  # an earlier try may have arrived
    assert after_response(200, 0, 2) is Next.DONE and after_response(404, 0, 2) is Next.DONE
    assert after_response(402, 0, 2) is Next.REJECTED
    assert after_response(503, 1, 2) is Next.RESEND and after_response(503, 2, 2) is Next.UNKNOWN


def test_rejection_reason_sources() -> None:
    settle = encode_header({"success": False, "errorReason": "insufficient_funds", "transaction": "",
                            "network": NET})
    assert rejection_reason({"payment-response": settle}, b"") == "insufficient_funds"
    h = v2_headers(req(5))
    pr = json.loads(base64.b64decode(h["payment-required"]))
    pr["error"] = "invalid_exact_evm_nonce_already_used"
    assert challenge_error({"payment-required": encode_header(pr)}) == "invalid_exact_evm_nonce_already_used"
    assert rejection_reason({}, b'{"x402Version":1,"error":"expired"}') == "expired"
    assert "no reason" in rejection_reason({}, b"")

