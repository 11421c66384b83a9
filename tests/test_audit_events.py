"""Audit events: canonical JSON (RFC 8785), and the guard that keeps secrets out of an append-only log."""

from __future__ import annotations

import json

import pytest

from paywire.audit.events import (
    SecretFieldError,
    digest,
    entry_event,
    entry_seq,
    log_entry,
    make_event,
    secret_field,
)
from paywire.mpp.jcs import canonicalize


def _event(**subject: object) -> bytes:
    return make_event("seller", "payment.settled", instance="seller-1", time=1_764_756_000.25,
                      subject=subject, previous="verified")


def test_an_event_is_canonical_json_with_its_schema_fields() -> None:
    raw = _event(payment_id="p1", amount="1000", network="eip155:8453")
    event = json.loads(raw)
    assert canonicalize(event) == raw, "the event bytes are the JCS form of the event"
    assert event["v"] == 1, "schema version"
    assert (event["component"], event["instance"], event["kind"]) == ("seller", "seller-1", "payment.settled")
    assert event["time"] == "2025-12-03T10:00:00.250Z", "UTC time with milliseconds"
    assert event["previous"] == "verified", "the previous state"
    assert event["subject"]["amount"] == "1000", "amounts stay decimal strings"


@pytest.mark.parametrize("field", ["private_key", "privateKey", "preimage", "root_key", "hmac_key", "macaroon",
                                   "authorization", "Authorization", "bearer_token", "api_key", "password",
                                   "mnemonic", "seed", "credential", "session_token", "secret"])
def test_secret_fields_are_refused(field: str) -> None:
    with pytest.raises(SecretFieldError, match=field):
        make_event("buyer", "payment.signed", instance="b", time=0, subject={}, data={"nested": {field: "x"}})


@pytest.mark.parametrize("field", ["preimage_digest", "root_key_id", "token_id", "tx_hash", "payment_hash",
                                   "authorization_digest", "public_key", "payer", "key_id", "credential_sha256"])
def test_digests_and_identifiers_are_allowed(field: str) -> None:
    assert not secret_field(field), f"{field} names a digest or an identifier, not a secret"


@pytest.mark.parametrize("value", ["Bearer abc.def", "L402 mac:pre", "Payment eyJhbGciOi", "LSAT x:y",
                                   "-----BEGIN PRIVATE KEY-----", "PRIVATE+KEY+n+00000000+AAAA"])
def test_values_that_look_like_authorization_headers_or_keys_are_refused(value: str) -> None:
    with pytest.raises(SecretFieldError, match="digest"):
        make_event("seller", "request.refused", instance="s", time=0, subject={}, data={"header": value})


def test_integers_a_json_reader_would_round_are_refused() -> None:
    with pytest.raises(SecretFieldError, match="decimal string"):
        _event(amount=2**64)


def test_digest_is_sha256_hex() -> None:
    assert digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest("a") == digest(b"a"), "text is hashed as UTF-8"


def test_a_log_entry_binds_the_event_to_its_sequence_number() -> None:
    raw = _event(payment_id="p1")
    entry = log_entry(41, raw)
    assert json.loads(entry) == {"event": json.loads(raw), "seq": 41}, "entry = {event, seq}"
    assert canonicalize(json.loads(entry)) == entry, "the entry is canonical JSON too"
    assert entry_seq(entry) == 41, "the sequence number reads back"
    assert entry_event(entry) == json.loads(raw), "the event reads back"
    assert entry_seq(entry.replace(b'"seq":41', b'"seq":041')) is None, "leading zeroes are not a sequence number"
    assert entry_seq(b'{"other":1}') is None, "not an entry"


def test_every_name_paywire_audit_exports_resolves() -> None:
    import paywire.audit

    missing = [name for name in paywire.audit.__all__ if getattr(paywire.audit, name, None) is None]
    assert not missing, f"paywire.audit lists names it cannot import: {missing}"


@pytest.mark.parametrize("text", ["plain", "ümlaut ☃ 𝄞", "quote \" back \\ slash", "ctl \x00\x01\x1f\x7f\t\n", "é/é"])
def test_the_fast_encoder_writes_the_rfc8785_bytes(text: str) -> None:
    """Events with ASCII keys and no floats skip the generic JCS encoder: the bytes must not change."""
    subject = {"payment_id": text, "amount": "10", "record": 2**53, "zeta": None, "alpha": True,
               "nested": {"b": [text, 1, False], "a": {}}}
    got = make_event("seller", "payment.served", instance=text, time=1_764_756_000.5, subject=subject,
                     previous=text, data={"state": "served"})
    want = canonicalize(json.loads(got))
    assert got == want, f"the fast encoder differs from RFC 8785 for {text!r}"
