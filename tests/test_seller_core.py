"""The seller's sans-I/O core: pricing, configuration errors, routing, the challenge, the paywall, the
payment-identifier rules. No chain, no sockets (the HTTP behaviour is in test_seller_exchange.py)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from paywire.errors import ConfigError
from paywire.evm.assets import KNOWN_ASSETS, Asset, AssetRegistry
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_exact import ExactEvmClient
from paywire.schemes.evm_exact.identity import authorization_key
from paywire.server.core import PaidRoute, Pass, Proceed, Reply, Seller, decimals_display
from paywire.server.paywall import render_paywall, script_json
from paywire.server.pricing import Offer
from paywire.server.request import RequestInfo
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from paywire.x402.models import PaymentPayload, SupportedKind, SupportedResponse

NET = "eip155:31337"
TOKEN = Asset(NET, "0x5FbDB2315678afecb367f032D93F642f64180aa3", "USD Coin", "2")
PAY_TO = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
REGISTRY = AssetRegistry((*KNOWN_ASSETS, TOKEN))


def seller(*routes: PaidRoute, **kw) -> Seller:
    return Seller(routes, pay_to=PAY_TO, network=NET, assets=REGISTRY, **kw)


def request(method: str = "GET", path: str = "/w", **headers: str) -> RequestInfo:
    return RequestInfo(method, path, f"http://shop.test{path}", {k.replace("_", "-").lower(): v
                                                                for k, v in headers.items()})


def pay(offer, *, extensions=None) -> str:
    inner = asyncio.run(ExactEvmClient(LocalSigner(KEY)).create_payload(offer))
    return encode_payment_payload(PaymentPayload(accepted=offer, payload=inner, extensions=extensions))


# ------------------------------------------------------------------------------------------ pricing


def test_money_prices_use_the_registry_and_token_decimals() -> None:
    s = seller(PaidRoute("GET /a", price="$0.01"), PaidRoute("GET /b", price=Decimal("1.5")),
               PaidRoute("GET /c", price=1234), PaidRoute("GET /d", offers=(Offer(price="$2", asset=TOKEN),)))
    amounts = [o.amount for _, o in s.static_offers()]
    assert amounts == [10_000, 1_500_000, 1234, 2_000_000]
    (_, a), *_ = s.static_offers()
    assert (a.asset, a.pay_to, a.network, a.extra) == (TOKEN.address, PAY_TO, NET, {"name": "USD Coin",
                                                                                   "version": "2"})


def test_base_mainnet_money_price_means_usdc() -> None:
    s = Seller([PaidRoute("GET /a", price="$0.25")], pay_to=PAY_TO, network="eip155:8453")
    (_, o), = s.static_offers()
    assert o.asset == "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913" and o.amount == 250_000
    assert o.extra == {"name": "USD Coin", "version": "2"}


@pytest.mark.parametrize(("route", "needle"), [
    (PaidRoute("GET /a", offers=(Offer(price="$0.01", network="eip155:4242"),)), "register the token"),
    (PaidRoute("GET /a", offers=(Offer(price="$0.01", asset="0x" + "11" * 20),)), "is unknown"),
    (PaidRoute("GET /a", price="one dollar"), "not a money price"),
    (PaidRoute("GET /a", price="$0.0000001"), "more precision"),
    (PaidRoute("GET /a", offers=(Offer(price=5, asset="0x" + "11" * 20),)), "EIP-712 domain"),
])
def test_misconfiguration_fails_at_startup_saying_what_to_change(route: PaidRoute, needle: str) -> None:
    """Issue item 1: a money price on an unknown asset (and friends) fails when the seller is built."""
    with pytest.raises(ConfigError) as err:
        seller(route)
    assert needle in str(err.value) and "GET /a" in str(err.value)


def test_route_without_network_or_pay_to_is_refused() -> None:
    with pytest.raises(ConfigError, match="network"):
        Seller([PaidRoute("GET /a", price="$1")], pay_to=PAY_TO)
    with pytest.raises(ConfigError, match="payTo"):
        Seller([PaidRoute("GET /a", price="$1")], network="eip155:8453")
    with pytest.raises(ConfigError, match="no price"):
        PaidRoute("GET /a")
    with pytest.raises(ConfigError, match="settle"):
        PaidRoute("GET /a", price=1, settle="later")  # type: ignore[arg-type]


def test_challenge_order_names_each_challenge_protocol_once() -> None:
    """Issue 11 item 11: L402 first by default; a per-route order is checked when the route is built."""
    assert PaidRoute("GET /a", price=1).challenge_order == ("l402", "mpp")
    assert PaidRoute("GET /a", price=1, challenge_order="mpp").challenge_order == ("mpp",)
    with pytest.raises(ConfigError, match="challenge_order"):
        PaidRoute("GET /a", price=1, challenge_order=("mpp", "x402"))
    with pytest.raises(ConfigError, match="challenge_order"):
        PaidRoute("GET /a", price=1, challenge_order=("mpp", "mpp"))


def test_unsupported_network_is_refused_against_supported() -> None:
    """Checklist 8: an offer the facilitator's /supported does not list fails with what to change."""
    s = seller(PaidRoute("GET /a", price="$0.01"))
    s.check_supported(SupportedResponse(kinds=(SupportedKind(2, "exact", NET),)))  # fine
    s.check_supported(SupportedResponse(kinds=(SupportedKind(2, "exact", "eip155:*"),)))  # family pattern
    with pytest.raises(ConfigError) as err:
        s.check_supported(SupportedResponse(kinds=(SupportedKind(2, "exact", "eip155:8453"),
                                                   SupportedKind(1, "exact", "base"))), "the facilitator (x)")
    msg = str(err.value)
    assert "GET /a offers exact on eip155:31337" in msg and "supports only: exact on eip155:8453" in msg
    assert "Change the route's network" in msg


def test_dynamic_price_is_resolved_per_request() -> None:
    s = seller(PaidRoute("/q/{n}", method="GET", price=lambda req: int(req.path.rsplit("/", 1)[1]) * 100))
    d = s.decide(request(path="/q/7"))
    assert isinstance(d, Reply) and d.status == 402
    assert decode_payment_required(d.header("PAYMENT-REQUIRED")).accepts[0].amount == 700


# ------------------------------------------------------------------------------------------ routing


@pytest.mark.parametrize(("pattern", "method", "path", "hit"), [
    ("GET /w", "GET", "/w", True), ("GET /w", "POST", "/w", False), ("GET /w", "HEAD", "/w", True),
    ("/w", "DELETE", "/w", True), ("GET,POST /w", "POST", "/w", True), ("GET /api/*", "GET", "/api/a/b", True),
    ("GET /items/{id}", "GET", "/items/42", True), ("GET /items/{id}", "GET", "/items/4/2", False),
    ("GET /f/{p:path}", "GET", "/f/a/b.txt", True), ("GET /w", "GET", "/w/", False),
])
def test_route_patterns(pattern: str, method: str, path: str, hit: bool) -> None:
    assert PaidRoute(pattern, price=1).matches(method, path) is hit


def test_unpriced_and_options_requests_pass() -> None:
    s = seller(PaidRoute("GET /w", price=1))
    assert isinstance(s.decide(request(path="/free")), Pass)
    assert isinstance(s.decide(request("OPTIONS")), Pass)  # not a preflight: the app answers
    pre = s.decide(request("OPTIONS", origin="https://a.test", access_control_request_method="GET"))
    assert isinstance(pre, Reply) and pre.status == 204
    assert "PAYMENT-SIGNATURE" in (pre.header("access-control-allow-headers") or "")


# ------------------------------------------------------------------------------------------ the exchange


def test_challenge_carries_both_generations_and_v1_only_routes_omit_the_header() -> None:
    s = seller(PaidRoute("GET /w", price="$0.01", description="weather"),
               PaidRoute("GET /v1", price=1, x402_versions=(1,)), PaidRoute("GET /v2", price=1, x402_versions=(2,)))
    both = s.decide(request())
    assert isinstance(both, Reply) and both.header("PAYMENT-REQUIRED")
    v1body = json.loads(both.body)
    assert v1body["x402Version"] == 1 and v1body["accepts"][0]["description"] == "weather"
    only1 = s.decide(request(path="/v1"))
    assert isinstance(only1, Reply) and only1.header("PAYMENT-REQUIRED") is None
    only2 = s.decide(request(path="/v2"))
    assert isinstance(only2, Reply) and json.loads(only2.body)["x402Version"] == 2


def test_matching_payment_proceeds_with_its_authorization_identity() -> None:
    s = seller(PaidRoute("GET /w", price=500))
    (_, offer), = s.static_offers()
    header = pay(offer)
    d = s.decide(request(payment_signature=header))
    assert isinstance(d, Proceed) and not d.v1 and d.requirements is offer
    assert d.auth_key.startswith(f"exact:{NET}:{TOKEN.address.lower()}:0x")
    assert d.auth_key == authorization_key(NET, TOKEN.address, d.payload.payload)
    assert d.payment_id is None and len(d.payload_hash) == 64
    again = s.decide(request(payment_signature=header))
    assert isinstance(again, Proceed) and again.payload_hash == d.payload_hash


def test_payment_identifier_rules_in_the_core() -> None:
    """Checklist 23 (the 400 half; 409 and replay need the store: test_seller_exchange.py)."""
    s = seller(PaidRoute("GET /w", price=500, payment_identifier="required"))
    (_, offer), = s.static_offers()
    ext = decode_payment_required(s.decide(request()).header("PAYMENT-REQUIRED")).extensions  # type: ignore[union-attr]
    assert ext["payment-identifier"]["info"] == {"required": True} and "schema" in ext["payment-identifier"]
    missing = s.decide(request(payment_signature=pay(offer)))
    assert isinstance(missing, Reply) and missing.status == 400
    bad = s.decide(request(payment_signature=pay(offer, extensions={"payment-identifier": {"info": {"id": "x y"}}})))
    assert isinstance(bad, Reply) and bad.status == 400
    pid = "pay_0123456789abcdef"
    good = s.decide(request(payment_signature=pay(offer, extensions={"payment-identifier": {"info": {"id": pid}}})))
    assert isinstance(good, Proceed) and good.payment_id == pid


# ------------------------------------------------------------------------------------------ the paywall


def test_paywall_is_selected_for_browsers_only() -> None:
    s = seller(PaidRoute("GET /w", price="$0.01"))
    browser = s.decide(request(accept="text/html,*/*", user_agent="Mozilla/5.0"))
    assert isinstance(browser, Reply) and browser.status == 402
    assert (browser.header("content-type") or "").startswith("text/html")
    api = s.decide(request(accept="text/html"))  # no Mozilla UA: an API client
    assert isinstance(api, Reply) and api.header("content-type") == "application/json"
    off = seller(PaidRoute("GET /w", price="$0.01", paywall=False)).decide(
        request(accept="text/html", user_agent="Mozilla/5.0"))
    assert isinstance(off, Reply) and off.header("content-type") == "application/json"


def test_paywall_json_cannot_break_out_of_its_script() -> None:
    """Checklist 20: ``<`` ``>`` ``&`` (and U+2028/9) are escaped in the embedded JSON."""
    evil = "</script><script>alert(1)</script>&\u2028"
    s = seller(PaidRoute("GET /w", price="$0.01", description=evil))
    html = s.decide(request(accept="text/html", user_agent="Mozilla/5.0")).body.decode()  # type: ignore[union-attr]
    head = html.split("</head>", 1)[0]
    injected = head.split("<script>window.x402 = ", 1)[1]
    assert "</script><script>alert" not in injected.split(";</script>", 1)[0]
    assert "\\u003C/script\\u003E" in injected and "\\u0026" in injected and "\\u2028" in injected
    assert json.loads(injected.split(";</script>", 1)[0])["paymentRequired"]["resource"]["description"] == evil
    assert script_json({"a": "<&>"}) == '{"a":"\\u003C\\u0026\\u003E"}'


def test_custom_paywall_template() -> None:
    s = seller(PaidRoute("GET /w", price="$0.01"), paywall_html="<html><head></head><body>pay me</body></html>")
    body = s.decide(request(accept="text/html", user_agent="Mozilla/5.0")).body.decode()  # type: ignore[union-attr]
    assert body.startswith("<html><head><script>window.x402 = ") and "pay me" in body


def test_render_paywall_display_amount() -> None:
    s = seller(PaidRoute("GET /w", price="$1.25"))
    pr = s.challenge(s.routes[0], request(), [o for _, o in s.static_offers()])
    html = render_paywall(pr, app_name="Shop", decimals=6)
    cfg = json.loads(html.split("window.x402 = ", 1)[1].split(";</script>", 1)[0])
    assert cfg["displayAmount"] == "1.25" and cfg["appName"] == "Shop" and cfg["testnet"] is True


def test_decimals_display() -> None:
    assert [decimals_display(a, d) for a, d in ((10_000, 6), (1, 6), (0, 6), (12, 0), (10**30, 18))] == [
        "0.01", "0.000001", "0", "12", "1000000000000"]


# ------------------------------------------------------------------------------------------ claim keys


def _model_claim(network: str, asset: str, payload) -> tuple[str, str] | None:
    """The claim key as it was computed before the one-pass check: through the full ``ExactEvmPayload`` model."""
    from paywire.errors import WireError
    from paywire.schemes.evm_exact.payload import ExactEvmPayload

    try:
        a = ExactEvmPayload.from_wire(dict(payload)).authorization
    except WireError:
        return None
    return f"exact:{network}:{asset.lower()}:{a.from_.lower()}:0x{a.nonce.hex()}", a.from_


def _mutations(inner: dict) -> list:
    """Well-formed and malformed variants of an EIP-3009 payload, one field broken at a time."""
    auth = inner["authorization"]
    out: list = [inner, {**inner, "extra": 1}, {**inner, "authorization": {**auth, "extra": "x"}},
                 {**inner, "authorization": {**auth, "nonce": auth["nonce"].upper().replace("0X", "0x")}},
                 {**inner, "authorization": {**auth, "from": auth["from"].lower()}},
                 {**inner, "authorization": {**auth, "value": "9" * 77}}, {}, [], "x", {"signature": inner["signature"]},
                 {**inner, "authorization": []}, {**inner, "signature": None}, {**inner, "signature": "0x12"},
                 {**inner, "signature": "0x123"}, {**inner, "signature": "12" * 65}, {**inner, "signature": "0xzz"}]
    bad = {"from": ["0x12", 5, None, "0X" + auth["from"][2:], auth["from"] + "\n", "0x" + "g" * 40],
           "to": ["0x12", 7, None, auth["to"] + "0"],
           "value": ["-1", "01", "1.0", 1, None, "1" * 78, str(2**256), str(2**256 - 1), "١"],
           "validAfter": ["x", "", 0, None, True], "validBefore": ["007", 1.5, None, str(2**256)],
           "nonce": ["0x" + "a" * 63, "0x" + "a" * 65, "a" * 66, 3, None, "0x" + "٣" * 64, "0x" + "g" * 64]}
    for key, values in bad.items():
        out.append({**inner, "authorization": {k: v for k, v in auth.items() if k != key}})  # missing
        out.extend({**inner, "authorization": {**auth, key: v}} for v in values)
    return out


def test_claim_key_agrees_with_the_model() -> None:
    """The claim key reads the EIP-3009 fields in one pass, without building the payload models: it must accept
    exactly the payloads the model accepts and give the same key and payer (lower-case nonce, as the model's
    bytes give it)."""
    from paywire.schemes.evm_exact.identity import authorization_key_and_payer

    offer = seller(PaidRoute("GET /w", price=500)).static_offers()[0][1]
    inner = dict(asyncio.run(ExactEvmClient(LocalSigner(KEY)).create_payload(offer)))
    cases = _mutations(inner)
    accepted = 0
    for case in cases:
        try:
            want = _model_claim(NET, TOKEN.address, case)
        except (TypeError, ValueError):  # dict() of a non-mapping: the old code raised too
            with pytest.raises((TypeError, ValueError)):
                authorization_key_and_payer(NET, TOKEN.address, case)
            continue
        assert authorization_key_and_payer(NET, TOKEN.address, case) == want, case
        accepted += want is not None
    assert accepted == 8  # the six well-formed variants, 78 ones and 2**256 - 1; both refuse every other case


def test_a_malformed_payload_keeps_a_stable_claim_key_that_no_valid_payment_has() -> None:
    """A payload the scheme cannot read is claimed under its payment hash: the same bytes replayed map to the same
    key, and that key cannot be a well-formed EIP-3009 payment's (different prefix)."""
    s = seller(PaidRoute("GET /w", price=500))
    (_, offer), = s.static_offers()
    good_header = pay(offer)
    good = s.decide(request(payment_signature=good_header))
    assert isinstance(good, Proceed)
    inner = dict(good.payload.payload)
    for broken in ({**inner, "signature": "0x12"},
                   {**inner, "authorization": {**inner["authorization"], "nonce": "0x" + "a" * 63}}):
        header = encode_payment_payload(PaymentPayload(accepted=offer, payload=broken))
        first, again = s.decide(request(payment_signature=header)), s.decide(request(payment_signature=header))
        assert isinstance(first, Proceed) and isinstance(again, Proceed)
        assert first.auth_key == again.auth_key == f"exact:{NET}:sha256:{first.payload_hash}"
        assert first.payer is None and first.auth_key != good.auth_key
        assert not first.auth_key.startswith(f"exact:{NET}:{TOKEN.address.lower()}:")


def test_payment_hash_and_ledger_text_keep_their_encodings() -> None:
    """The payment hash (ledger ``payload_hash``, compared on replays across versions) and the ledger's payload
    text are the same bytes as ``json.dumps`` with the documented options gives, whatever the payload holds."""
    import hashlib
    from types import MappingProxyType

    from paywire.server.core import payment_hash
    from paywire.server.flow import _compact
    from paywire.x402.models import PaymentPayloadV1

    offer = seller(PaidRoute("GET /w", price=500)).static_offers()[0][1]
    inner = {"z": [1, 2.5, None, True, {"é": "ü\u2028", "a": "x"}], "a": "\u00ff\U0001f600", "m": {"b": 1, "a": 2}}
    for payload in (PaymentPayload(accepted=offer, payload=inner, extensions={"k": "v"}),
                    PaymentPayload(accepted=offer, payload=MappingProxyType(inner)),
                    PaymentPayloadV1(scheme="exact", network="base-sepolia", payload=inner)):
        if isinstance(payload, PaymentPayloadV1):
            core = {"v": 1, "scheme": "exact", "network": "eip155:84532", "payload": dict(inner)}
        else:
            core = {"v": 2, "accepted": payload.accepted.to_wire(), "payload": dict(inner)}
        text = json.dumps(core, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert payment_hash(payload) == hashlib.sha256(text).hexdigest()
        if type(payload.payload) is dict:  # a decoded payment's payload is a plain dict
            assert _compact(payload.wire_view()) == json.dumps(payload.to_wire(), separators=(",", ":"))
