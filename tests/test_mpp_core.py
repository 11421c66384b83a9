"""MPP core: challenge grammar, binding with key rotation, credential checks and their problem types.

Negative tests name the status and problem type checklist 108/109 require.
"""

from __future__ import annotations

import base64
import json

import pytest

from paywire.errors import WireError
from paywire.mpp import problems as P
from paywire.mpp.accept import parse_accept_payment, rank_offers
from paywire.mpp.authparams import parse_challenges, quote
from paywire.mpp.b64 import b64url_encode
from paywire.mpp.challenge import Challenge, ChallengeBinder, parse_www_authenticate
from paywire.mpp.credential import ChallengeEcho, Credential, parse_authorization
from paywire.mpp.digest import content_digest, digest_matches
from paywire.mpp.problems import Problem
from paywire.mpp.receipt import Receipt
from paywire.mpp.server import Accepted, MppServer, Offer

SECRET = b"s" * 32
NOW = 1_800_000_000.0
REQ = {"amount": "1000", "currency": "usd", "recipient": "acct_1"}
OFFERS = [Offer("example", "charge", REQ), Offer("other", "charge", {"amount": "5", "currency": "sat"})]


def server(**kw) -> MppServer:
    return MppServer("api.example.com", ChallengeBinder([SECRET]), clock=lambda: NOW, **kw)


def credential_for(ch: Challenge, payload=None, **echo_changes) -> str:
    echo = ChallengeEcho.of(ch)
    if echo_changes:
        echo = ChallengeEcho(**{**{f: getattr(echo, f) for f in echo.__slots__}, **echo_changes})
    return Credential(echo, payload or {"proof": "x"}).to_authorization()


def test_challenge_header_roundtrip_and_required_params():
    """Checklist 104/105: non-empty id, realm, lowercase method, intent, JCS base64url request."""
    s = server()
    ch = s.issue(OFFERS[0])
    hdr = ch.to_header()
    assert hdr.startswith('Payment id="') and 'request="' in hdr and "=" not in ch.request_b64
    [back] = parse_www_authenticate(hdr)
    assert back == ch and back.verify_id(s.binder)
    assert json.loads(base64.urlsafe_b64decode(ch.request_b64 + "==")) == REQ
    assert back.opaque is not None and len(back.opaque["_mpp_nonce"]) == 64  # unique per challenge
    assert s.issue(OFFERS[0]).id != ch.id


def test_several_challenges_in_one_header_and_several_headers():
    """One header with comma-joined challenges, other schemes mixed in, and several headers."""
    s = server()
    a, b = s.issue(OFFERS[0]), s.issue(OFFERS[1])
    joined = f'Basic realm="x", {a.to_header()}, Bearer, {b.to_header()}'
    assert [c.id for c in parse_www_authenticate(joined)] == [a.id, b.id]
    assert [c.id for c in parse_www_authenticate([b.to_header(), 'Negotiate abc==', a.to_header()])] == [b.id, a.id]


def test_auth_param_grammar_edge_cases():
    cs = parse_challenges('Payment ID = "a\\"b" , Realm=tok, method="x"  L402 version="0" token="t" invoice="i"')
    assert [c.scheme for c in cs] == ["Payment", "L402"]
    assert cs[0].params == {"id": 'a"b', "realm": "tok", "method": "x"}
    assert cs[1].params == {"version": "0", "token": "t", "invoice": "i"}  # missing commas tolerated
    dup = parse_challenges('Payment id="a", id="b"')[0]
    assert not dup.valid
    assert quote('é "q" \\') == '"\\u00e9 \\"q\\" \\\\"'
    assert parse_challenges('Payment d="\\u00e9\\ud83d\\ude00"')[0].params["d"] == "é😀"
    with pytest.raises(ValueError):
        quote("line\r\nbreak")


def test_parse_rejects_incomplete_challenges():
    """Clients MUST reject challenges with missing/empty id (checklist 105)."""
    good = server().issue(OFFERS[0])
    for broken in (good.to_header().replace(f'id="{good.id}"', 'id=""'),
                   good.to_header().replace('method="example"', 'method="Example"'),
                   good.to_header().replace(f'request="{good.request_b64}"', 'request="!!"')):
        assert parse_www_authenticate(broken) == []


def test_binding_with_key_rotation():
    """Checklist 107: ids issued under the previous secret still verify after rotation; unknown secrets don't."""
    old, new = b"o" * 32, b"n" * 32
    ch = MppServer("r", ChallengeBinder([old]), clock=lambda: NOW).issue(OFFERS[0])
    rotated = MppServer("r", ChallengeBinder([new, old]), clock=lambda: NOW)
    assert ch.verify_id(rotated.binder)
    assert isinstance(rotated.check(credential_for(ch), OFFERS), Accepted)
    assert not ch.verify_id(ChallengeBinder([new]))
    with pytest.raises(ValueError):
        ChallengeBinder([b"short"])


def test_valid_credential_is_accepted():
    s = server()
    ch = s.issue(OFFERS[0])
    got = s.check(credential_for(ch), OFFERS)
    assert isinstance(got, Accepted) and got.offer is OFFERS[0] and got.challenge.id == ch.id
    assert got.challenge.request == REQ and got.expires_at == NOW + 300
    assert s.check(None, OFFERS) is None and s.check("Bearer abc", OFFERS) is None
    assert isinstance(s.check(f"Basic Zm9v, {credential_for(ch)}", OFFERS), Accepted)


def _problem(got, ptype, status):
    assert isinstance(got, Problem), got
    assert got.type is ptype and got.status == status, got
    return got


@pytest.mark.parametrize(
    "change",
    ["request", "opaque", "id", "expires", "digest", "method_extra"],
)
def test_tampered_echo_is_invalid_challenge(change):
    """Checklist 107/108: any tampered bound parameter → 402 invalid-challenge (fresh challenge)."""
    s = server()
    ch = s.issue(OFFERS[0])
    e = ChallengeEcho.of(ch)
    tampered = {
        "request": {"request": b64url_encode(json.dumps({**REQ, "amount": "1"}).encode())},
        "opaque": {"opaque": b64url_encode(b'{"_mpp_nonce":"00"}')},
        "id": {"id": e.id[:-2] + ("AA" if not e.id.endswith("AA") else "BB")},
        "expires": {"expires": "2099-01-01T00:00:00.000Z"},
        "digest": {"digest": content_digest(b"x")},
        "method_extra": {"intent": "session"},
    }[change]
    got = s.check(credential_for(ch, **tampered), OFFERS, body=b"x" if change == "digest" else None)
    p = _problem(got, P.INVALID_CHALLENGE, 402)
    assert p.wants_challenge and p.challenge_id is not None


def test_wrong_realm_is_invalid_challenge():
    """Checklist 108: a challenge minted (with the same secret) for another realm is refused."""
    other = MppServer("evil.example", ChallengeBinder([SECRET]), clock=lambda: NOW).issue(OFFERS[0])
    _problem(server().check(credential_for(other), OFFERS), P.INVALID_CHALLENGE, 402)


def test_expired_and_missing_expiry():
    """Checklist 108: expired → 402 payment-expired; no expires → invalid-challenge (fail closed, as pympp)."""
    s = server()
    ch = s.issue(OFFERS[0])
    later = MppServer(s.realm, s.binder, clock=lambda: NOW + 301)
    _problem(later.check(credential_for(ch), OFFERS), P.PAYMENT_EXPIRED, 402)
    no_exp = Challenge.create(s.binder, realm=s.realm, method="example", intent="charge", request=REQ)
    _problem(s.check(credential_for(no_exp), OFFERS), P.INVALID_CHALLENGE, 402)


def test_malformed_credentials():
    """Checklist 108: bad base64url/JSON/shape → 402 malformed-credential; two credentials → 400."""
    s = server()
    ch = s.issue(OFFERS[0])
    for bad in ("Payment !!!", "Payment " + b64url_encode(b"[1]"), "Payment " + b64url_encode(b'{"challenge":{}}'),
                "Payment " + b64url_encode(b'{"challenge":{"id":"x"},"payload":{}}'),
                "Payment " + b64url_encode(b'{"a":1,"a":2}'), "Payment " + "A" * 70_000):
        _problem(s.check(bad, OFFERS), P.MALFORMED_CREDENTIAL, 402)
    two = credential_for(ch) + ", " + credential_for(ch)
    p = _problem(s.check(two, OFFERS), P.MALFORMED_CREDENTIAL, 400)
    assert not p.wants_challenge


def test_unsupported_method_is_400():
    """Checklist 108: a method the route does not accept → 400 method-unsupported, no challenge."""
    s = server()
    ch = s.issue(Offer("tempo", "charge", REQ))
    p = _problem(s.check(credential_for(ch), OFFERS), P.METHOD_UNSUPPORTED, 400)
    assert not p.wants_challenge


def test_request_body_digest_binding():
    """Checklist 112: the challenge binds the body; another body (or none) is refused."""
    s = server()
    body = b'{"q":"weather"}'
    ch = s.issue(OFFERS[0], body=body)
    assert ch.digest == content_digest(body) and ch.digest.startswith("sha-256=:")
    assert isinstance(s.check(credential_for(ch), OFFERS, body=body), Accepted)
    _problem(s.check(credential_for(ch), OFFERS, body=b'{"q":"stocks"}'), P.INVALID_CHALLENGE, 402)
    _problem(s.check(credential_for(ch), OFFERS, body=None), P.INVALID_CHALLENGE, 402)
    unbound = s.issue(OFFERS[0])
    _problem(s.check(credential_for(unbound), OFFERS, body=body), P.INVALID_CHALLENGE, 402)
    assert digest_matches(f"sha-512=:{base64.b64encode(__import__('hashlib').sha512(body).digest()).decode()}:", body)
    assert not digest_matches("md5=:AAAA:", body)


def test_reply_shapes():
    """Checklist 104/109/111: 402 = problem+json + no-store + one WWW-Authenticate per offer; receipts private."""
    s = server()
    r = s.reply_payment_required(OFFERS)
    assert r.status == 402 and r.header("Cache-Control") == "no-store"
    assert r.header("Content-Type") == "application/problem+json"
    chs = [parse_www_authenticate(v)[0] for v in r.header_values("WWW-Authenticate")]
    assert [c.method for c in chs] == ["example", "other"]
    body = json.loads(r.body)
    assert body["type"] == "https://paymentauth.org/problems/payment-required" and body["status"] == 402
    assert body["challengeId"] == chs[0].id
    denied = s.reply_problem(P.forbidden("paid, but not for you"), OFFERS)
    assert denied.status == 403 and not denied.header_values("WWW-Authenticate")
    rec = Receipt.success("example", "ref-1", now=NOW, challenge_id="c1")
    assert s.receipt_headers(rec)[1] == ("Cache-Control", "private")
    assert Receipt.from_header(rec.to_header()) == rec
    with pytest.raises(WireError):
        Receipt.from_header(b64url_encode(b'{"status":"failed","method":"x","timestamp":"t","reference":"r"}'))
    assert {t.uri for t in P.ALL_TYPES} >= {P.BASE_URI + s for s in (
        "payment-required", "payment-insufficient", "payment-expired", "verification-failed", "method-unsupported",
        "malformed-credential", "invalid-challenge")}


def test_accept_payment_filters_and_orders():
    """Digest §11.1: q ordering, server order on ties, most specific range wins, q=0 excludes."""
    offers = [("tempo", "charge"), ("tempo", "session"), ("stripe", "charge"), ("solana", "charge")]
    assert rank_offers(offers, None) == [0, 1, 2, 3]
    assert rank_offers(offers, "stripe/charge;q=0.5, solana/charge;q=0.3, tempo/charge, tempo/session") == [0, 1, 2, 3]
    assert rank_offers(offers, "tempo/*, solana/*;q=0.6, stripe/charge;q=0.2") == [0, 1, 3, 2]
    assert rank_offers(offers, "tempo/charge, tempo/session;q=0, solana/charge;q=0.8, stripe/charge;q=0.4") == [0, 3, 2]
    assert rank_offers(offers, "*/*, tempo/*;q=0") == [2, 3]
    assert rank_offers(offers, "*/*;q=0") == []  # the client refuses everything: no offer
    assert rank_offers(offers, "stripe/charge;Q=0.5") == [2]  # the weight's name is case-insensitive (RFC 9110)
    assert parse_accept_payment("tempo/charge;q=2") is None  # malformed: ignored
    s = server()
    r = s.reply_payment_required(OFFERS, accept_payment="other/charge")
    assert [parse_www_authenticate(v)[0].method for v in r.header_values("WWW-Authenticate")] == ["other"]


def test_accept_payment_drops_the_methods_it_does_not_list():
    """Digest §11.1 (issue 11 item 12): servers filter to the offers a range with q > 0 matches, so a method the
    header does not list is dropped, not only one it refuses with q=0 — also when it lists none of ours."""
    offers = [("tempo", "charge"), ("tempo", "session"), ("stripe", "charge"), ("solana", "charge")]
    assert rank_offers(offers, "stripe/charge") == [2], "an unlisted method was offered"
    assert rank_offers(offers, "solana/*, tempo/session;q=0.4") == [3, 1], "an unlisted method was offered"
    assert rank_offers(offers, "tempo/*;q=0") == [], "a header that only refuses tempo still got other offers"
    assert rank_offers(offers, "lightning/charge") == [], "a header listing none of ours still got offers"


def test_credential_from_client_that_reserializes_request():
    """A client that re-encodes the same request JSON (other key order) still binds via the canonical form."""
    s = server()
    ch = s.issue(OFFERS[0])
    reordered = b64url_encode(json.dumps(dict(reversed(list(REQ.items())))).encode())
    assert reordered != ch.request_b64
    assert isinstance(s.check(credential_for(ch, request=reordered), OFFERS), Accepted)


def test_credential_roundtrip_keeps_unknown_and_optional_fields():
    ch = server().issue(OFFERS[0])
    cred = Credential(ChallengeEcho.of(ch), {"a": [1, {"b": None}]}, "did:key:z6Mk")
    back = parse_authorization(cred.to_authorization())
    assert back.challenge == cred.challenge and back.payload == cred.payload and back.source == cred.source
