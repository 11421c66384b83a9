"""L402: identifier, macaroons, caveat attenuation, header forms, verification order and statuses
(checklist 95–101, 103). Invoices come from a local signer of real BOLT11s; the LNbits flow is in
test_lightning_lnbits.py."""

from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest

pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")

from paywire.errors import WireError
from paywire.l402 import macaroons as M
from paywire.l402.caveats import (
    Caveat,
    CaveatError,
    capabilities_caveat,
    check_caveats,
    request_satisfiers,
    services_caveat,
    valid_until_caveat,
)
from paywire.l402.header import (
    credential_from_headers,
    format_challenges,
    parse_challenges_l402,
    parse_credential,
)
from paywire.l402.identifier import Identifier
from paywire.l402.server import L402Denied, L402Ok, L402Server
from paywire.lightning.base import Invoice, InvoiceStatus, PaymentResult
from paywire.store.l402 import L402Store

bolt11 = pytest.importorskip("bolt11", reason="the bolt11 package (test dependency) is not installed")


class SigningNode:
    """Issues real signed regtest invoices and remembers their preimages (a node's job, no network)."""

    def __init__(self) -> None:
        self.key = os.urandom(32).hex()
        self.preimages: dict[str, str] = {}

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Invoice:
        pre = os.urandom(32)
        h = hashlib.sha256(pre).hexdigest()
        now = int(time.time())
        inv = bolt11.Bolt11(currency="bcrt", amount_msat=bolt11.MilliSatoshi(amount_sat * 1000), date=now,
                            tags=bolt11.Tags.from_dict({"payment_hash": h, "payment_secret": os.urandom(32).hex(),
                                                        "description": memo, "expire_time": expiry}))
        self.preimages[h] = pre.hex()
        return Invoice(bolt11.encode(inv, self.key), h, amount_sat, float(now + expiry))

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        return InvoiceStatus(payment_hash, False)

    async def pay_invoice(self, bolt11_str: str, *, max_fee_sat: int = 10) -> PaymentResult:
        raise NotImplementedError


@pytest.fixture
async def l402(store_url):
    store = await L402Store.open(store_url)
    node = SigningNode()
    yield L402Server(store, node, service="weather", token_ttl=600), node
    await store.aclose()


def test_identifier_layout():
    """Checklist 96: uint16 version 0 ‖ payment_hash ‖ token_id, 66 bytes big-endian."""
    ident = Identifier.new(bytes(range(32)))
    raw = ident.encode()
    assert len(raw) == 66 and raw[:2] == b"\x00\x00" and raw[2:34] == bytes(range(32))
    assert Identifier.decode(raw) == ident and ident.key_id == hashlib.sha256(raw).hexdigest()
    for bad in (b"\x00\x01" + raw[2:], raw[:65], b""):
        with pytest.raises(WireError):
            Identifier.decode(bad)


def test_macaroon_is_v2_and_matches_library_derivation():
    """V2 binary, location lsat, standard padded base64; sig = HMAC chain from the derived key."""
    import hmac

    ident, key = Identifier.new(os.urandom(32)), os.urandom(32)
    m = M.mint(ident, key, ["services=weather:0"])
    b64 = M.encode(m)
    raw = base64.b64decode(b64, validate=True)
    assert raw[0] == 2 and b64.endswith(("=", "")) and "-" not in b64 and "_" not in b64
    derived = hmac.new(b"macaroons-key-generator", key, hashlib.sha256).digest()
    sig0 = hmac.new(derived, ident.encode(), hashlib.sha256).digest()
    assert m.signature_bytes == hmac.new(sig0, b"services=weather:0", hashlib.sha256).hexdigest().encode()
    back = M.decode(b64)
    assert M.identifier_of(back) == ident and M.signature_ok(back, key)
    assert M.decode(base64.urlsafe_b64encode(raw).decode().rstrip("=")).signature == m.signature


def test_caveat_attenuation_rules():
    """Checklist 101: later caveats may only narrow; the last one must allow the request; unknown skipped."""
    now = 1_000.0
    sat = request_satisfiers("weather", "forecast", now)
    ok = [services_caveat({"weather": 0, "news": 1}), services_caveat(["weather"]),
          capabilities_caveat("weather", ["forecast", "history"]), capabilities_caveat("weather", ["forecast"]),
          valid_until_caveat("weather", 2_000), valid_until_caveat("weather", 1_500), Caveat("custom_x", "anything")]
    check_caveats(ok, sat)
    bad_cases = [
        [services_caveat(["weather"]), services_caveat(["weather", "news"])],  # widening services
        [services_caveat(["news"])],  # wrong service
        [capabilities_caveat("weather", ["history"])],  # capability not allowed
        [capabilities_caveat("weather", ["forecast"]), capabilities_caveat("weather", ["forecast", "x"])],
        [valid_until_caveat("weather", 1_500), valid_until_caveat("weather", 2_000)],  # extending expiry
        [valid_until_caveat("weather", 1_000)],  # expired (now < value is required)
        [Caveat("services", "weather")],  # malformed services value
    ]
    for caveats in bad_cases:
        with pytest.raises(CaveatError):
            check_caveats(caveats, sat)


def test_challenge_forms_and_lenient_parsing():
    """Checklist 95/97/98: macaroon= first, then version="0", token=; LSAT and sloppy forms parse."""
    hdrs = format_challenges("TUFD", "lnbcrt1xyz")
    assert hdrs == ['L402 macaroon="TUFD", invoice="lnbcrt1xyz"',
                    'L402 version="0", token="TUFD", invoice="lnbcrt1xyz"']
    alby = 'L402 version="0" token="TUFD", invoice="lnbcrt1xyz"'
    lsat = 'LSAT invoice="lnbcrt1xyz", macaroon="TUFD"'
    parsed = parse_challenges_l402([*hdrs, alby, lsat, 'Payment id="x"'])
    assert [(c.scheme, c.macaroon, c.invoice) for c in parsed] == [("L402", "TUFD", "lnbcrt1xyz")] * 3 + [
        ("LSAT", "TUFD", "lnbcrt1xyz")]
    assert parsed[1].version == "0" and parsed[0].version is None


def test_credential_parsing():
    """Checklist 97/99: L402 or LSAT, case-insensitive scheme, preimage normalized, junk refused."""
    pre = "AB" * 32
    c = parse_credential(f"lsat TUFD==:{pre}")
    assert c.scheme == "LSAT" and c.macaroons == ("TUFD==",) and c.preimage == "ab" * 32
    c = parse_credential(f"Bearer x, L402 QQ==,Qg==:{'cd' * 32}")
    assert c.macaroons == ("QQ==", "Qg==")
    for bad in ("L402 TUFD", f"L402 :{pre}", f"L402 TUFD:{pre[:-2]}", f"Basic TUFD:{pre}", f"L402 a:b:{pre}x"):
        with pytest.raises(WireError):
            parse_credential(bad)


async def test_paid_token_is_reusable_and_checks_fail_with_spec_statuses(l402):
    """Checklist 99–101: accepted with the right preimage (again and again); failures → 401/402."""
    server, node = l402
    ch = await server.challenge(21)
    assert ch.headers[0].startswith('L402 macaroon="') and ch.headers[1].startswith('L402 version="0", token="')
    pre = node.preimages[ch.payment_hash]
    for _ in range(3):  # reusable until expiry (checklist 103)
        ok = await server.verify(f"L402 {ch.macaroon}:{pre}")
        assert isinstance(ok, L402Ok) and ok.payment_hash == ch.payment_hash
    assert isinstance(await server.verify(f"LSAT {ch.macaroon}:{pre}"), L402Ok)

    denied = await server.verify(f"L402 {ch.macaroon}:{'00' * 32}")  # wrong preimage
    assert isinstance(denied, L402Denied) and denied.status == 401 and "preimage" in denied.reason
    assert (await server.verify(None)).status == 402
    assert (await server.verify(f"L402 !!!:{pre}")).status == 402  # malformed → fresh challenge

    # forged: same identifier, different root key; and a caveat stripped by re-signing is impossible
    forged = M.encode(M.mint(M.identifier_of(M.decode(ch.macaroon)), os.urandom(32), ["services=weather:0"]))
    assert (await server.verify(f"L402 {forged}:{pre}")).status == 401
    # attenuation by the holder stays valid; widening is refused
    narrowed = M.encode(M.attenuate(M.decode(ch.macaroon), [valid_until_caveat("weather", int(time.time()) + 60)]))
    assert isinstance(await server.verify(f"L402 {narrowed}:{pre}"), L402Ok)
    widened = M.encode(M.attenuate(M.decode(ch.macaroon), [valid_until_caveat("weather", 2**40)]))
    assert (await server.verify(f"L402 {widened}:{pre}")).status == 401
    other_service = M.encode(M.attenuate(M.decode(ch.macaroon), [services_caveat(["news"])]))
    assert (await server.verify(f"L402 {other_service}:{pre}")).status == 401


async def test_expired_caveat_and_revocation(l402):
    server, node = l402
    ch = await server.challenge(5)
    pre = node.preimages[ch.payment_hash]
    assert isinstance(await server.verify(f"L402 {ch.macaroon}:{pre}"), L402Ok)
    late = await server.verify(f"L402 {ch.macaroon}:{pre}", now=time.time() + 601)
    assert isinstance(late, L402Denied) and late.status == 401 and "expired" in late.reason
    assert await server.revoke(ch.macaroon)
    assert (await server.verify(f"L402 {ch.macaroon}:{pre}")).status == 401


async def test_capability_caveat_and_aperture_status(store_url):
    store = await L402Store.open(store_url)
    node = SigningNode()
    try:
        server = L402Server(store, node, service="weather", reject_status=402)
        ch = await server.challenge(1, caveats=[capabilities_caveat("weather", ["read"])])
        pre = node.preimages[ch.payment_hash]
        assert isinstance(await server.verify(f"L402 {ch.macaroon}:{pre}", capability="read"), L402Ok)
        assert (await server.verify(f"L402 {ch.macaroon}:{pre}", capability="write")).status == 402
    finally:
        await store.aclose()


def test_macaroon_header_with_preimage_caveat():
    """aperture's alternative carrier: hex macaroon in ``Macaroon`` with a ``preimage=`` caveat."""
    ident, key = Identifier.new(os.urandom(32)), os.urandom(32)
    m = M.mint(ident, key, ["services=weather:0", "preimage=" + "ef" * 32])
    value = credential_from_headers({"Macaroon": M.encode_hex(m)})
    assert value is not None and value.endswith(":" + "ef" * 32)
    assert parse_credential(value).macaroons == (M.encode(m),)
    assert credential_from_headers({"Macaroon": "zz"}) is None and credential_from_headers({}) is None


def test_services_attenuation_refuses_a_tier_raise():
    """Checklist 101 (macaroon-spec: services only narrow): a later ``services`` caveat may drop services or lower
    a tier, never raise one; tiers are uint8."""
    sat = request_satisfiers("weather", None, 1_000.0)
    check_caveats([services_caveat({"weather": 1, "news": 0}), services_caveat({"weather": 0})], sat)
    with pytest.raises(CaveatError, match="raises the tier"):
        check_caveats([services_caveat({"weather": 0}), services_caveat({"weather": 1})], sat)
    with pytest.raises(CaveatError, match="raises the tier"):
        check_caveats([services_caveat({"weather": 0, "news": 2}), services_caveat({"weather": 0, "news": 3})], sat)
    for value in ("weather:256", "weather:" + "9" * 5000, "weather:0,weather:1"):
        with pytest.raises(CaveatError):
            check_caveats([Caveat("services", value)], sat)


async def test_attenuated_tier_raise_is_refused_by_the_server(l402):
    """A holder adding ``services=weather:1`` after the minted ``weather:0`` gets 401, not access."""
    server, node = l402
    ch = await server.challenge(21)
    pre = node.preimages[ch.payment_hash]
    raised = M.encode(M.attenuate(M.decode(ch.macaroon), [services_caveat({"weather": 1})]))
    denied = await server.verify(f"L402 {raised}:{pre}")
    assert isinstance(denied, L402Denied), "a token whose tier was raised by its holder was accepted"
    assert denied.status == 401, f"a tier raise got {denied.status}"
    kept = M.encode(M.attenuate(M.decode(ch.macaroon), [services_caveat({"weather": 0})]))
    assert isinstance(await server.verify(f"L402 {kept}:{pre}"), L402Ok), "re-stating the same tier was refused"


async def test_several_macaroons_in_one_credential(l402):
    """L402 grammar ``auth-tokens ":" preimage`` with comma-separated tokens: one valid macaroon among them
    admits; none valid → 401 naming each; more than the limit → 402 saying so."""
    server, node = l402
    ch = await server.challenge(21)
    pre = node.preimages[ch.payment_hash]
    other = (await server.challenge(21)).macaroon  # ours, but for another (unpaid) invoice
    foreign = M.encode(M.mint(Identifier.new(os.urandom(32)), os.urandom(32), ["services=weather:0"]))
    for tokens in ((foreign, ch.macaroon), (ch.macaroon, other), (other, foreign, ch.macaroon)):
        res = await server.verify(f"L402 {','.join(tokens)}:{pre}")
        assert isinstance(res, L402Ok), f"{len(tokens)} macaroons with one valid were refused: {res}"
        assert res.payment_hash == ch.payment_hash, "the wrong macaroon admitted the request"
    spaced = await server.verify(f"L402 {foreign}, {ch.macaroon}:{pre}")
    assert isinstance(spaced, L402Ok), f"a space after the comma was refused: {spaced}"
    none = await server.verify(f"L402 {foreign},{other}:{pre}")
    assert isinstance(none, L402Denied) and none.status == 401, f"no valid macaroon got {none}"
    assert "#1: unknown or forged token" in none.reason and "#2: preimage" in none.reason, none.reason
    many = await server.verify(f"L402 {','.join([ch.macaroon] * 9)}:{pre}")
    assert isinstance(many, L402Denied) and many.status == 402, f"9 macaroons got {many}"
    assert "at most 8" in many.reason, many.reason
