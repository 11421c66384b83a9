"""The identity cores, sans-I/O: EIP-4361 messages, DIDs (did:key, did:pkh), the SIWX challenge's checks in time.

Message vectors are what ``signinwithethereum`` 5.0.2 (the official x402 SDK's SIWE library) prints for the same
fields; the did:key strings are the W3C did:key spec's examples.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywire.evm.signer import LocalSigner
from paywire.identity.did import (
    DidError,
    Identity,
    b58decode,
    b58encode,
    did_key,
    did_pkh,
    parse_did_key,
    parse_did_pkh,
)
from paywire.identity.siwe import (
    SiweError,
    SiweMessage,
    format_time,
    parse_message,
    parse_time,
    personal_sign_digest,
)
from paywire.identity.siwx import (
    SiwxContractCheck,
    SiwxFailure,
    SiwxIssuer,
    SiwxProof,
    SplicedHeader,
    answer_challenge,
    decode_proof,
    encode_proof,
)

WITH_STATEMENT = (
    "service.org wants you to sign in with your Ethereum account:\n0x71C7656EC7ab88b098defB751B7401B5f6d8976F\n\n"
    "I accept the ServiceOrg Terms of Service: https://service.org/tos\n\nURI: https://service.org/login\n"
    "Version: 1\nChain ID: 1\nNonce: 32891757\nIssued At: 2021-09-30T16:25:24.000Z\nResources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n- https://example.com/my-web2-claim.json")
NO_STATEMENT = (
    "localhost:8080 wants you to sign in with your Ethereum account:\n0x71C7656EC7ab88b098defB751B7401B5f6d8976F\n\n\n"
    "URI: http://localhost:8080/x\nVersion: 1\nChain ID: 8453\nNonce: abcdefgh1234\nIssued At: 2021-09-30T16:25:24Z\n"
    "Expiration Time: 2021-09-30T17:25:24Z\nNot Before: 2021-09-30T16:00:00Z\nRequest ID: req-1")


# ------------------------------------------------------------------------------------------------ EIP-4361


@pytest.mark.parametrize("text", [WITH_STATEMENT, NO_STATEMENT])
def test_siwe_reference_messages_parse_and_print_the_same(text: str) -> None:
    assert parse_message(text).text() == text, "our EIP-4361 text differs from the reference library's"


def test_siwe_fields_are_read() -> None:
    m = parse_message(NO_STATEMENT)
    assert (m.domain, m.chain_id, m.nonce, m.statement, m.request_id) == (
        "localhost:8080", 8453, "abcdefgh1234", None, "req-1"), "a field was misread"


@pytest.mark.parametrize("bad", [
    WITH_STATEMENT.replace("Version: 1", "Version: 2"),
    WITH_STATEMENT.replace("Nonce: 32891757", "Nonce: 123"),  # under 8 characters
    WITH_STATEMENT.replace("0x71C7656EC7ab88b098defB751B7401B5f6d8976F", "0x71C7656EC7ab88b098defB751B7401B5f6d8976f"),
    WITH_STATEMENT.replace("Issued At: 2021-09-30T16:25:24.000Z", "Issued At: yesterday"),
    WITH_STATEMENT.replace("Chain ID: 1\nNonce", "Nonce: 32891757\nChain ID: 1\nNonce"),  # out of order
    WITH_STATEMENT + "\nExtra: line",
    WITH_STATEMENT.replace("service.org wants", "https://service.org wants"),
    WITH_STATEMENT.replace("\n", "\r\n"),
    "",
])
def test_siwe_parser_is_strict(bad: str) -> None:
    with pytest.raises(SiweError):
        parse_message(bad)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_siwe_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(SiweError):
        parse_message(text)


# ------------------------------------------------------------------------------------------------ DIDs


def test_did_key_ed25519_round_trip() -> None:
    key = bytes(range(32))
    did = did_key("Ed25519", key)
    assert did.startswith("did:key:z6Mk"), "an Ed25519 did:key must start z6Mk"
    parsed = parse_did_key(did)
    assert (parsed.key_type, parsed.public_key, parsed.address) == ("Ed25519", key, None), "round trip broke"


def test_did_key_secp256k1_links_the_ethereum_address() -> None:
    signer = LocalSigner.generate()
    pub = coincurve.PrivateKey(signer.private_key).public_key.format(compressed=True)
    did = did_key("secp256k1", pub)
    assert did.startswith("did:key:zQ3s"), "a secp256k1 did:key must start zQ3s"
    ident = Identity.from_did(did, "agent-sig")
    assert ident.controls(signer.address), "the did:key's linked address is not the key's"


@pytest.mark.parametrize("did", ["did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
                                 "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"])
def test_did_key_spec_examples_parse(did: str) -> None:
    parsed = parse_did_key(did)
    assert did_key(parsed.key_type, parsed.public_key) == did, "a spec example did not round trip"


@pytest.mark.parametrize("did", [
    "did:key:6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",  # no multibase prefix
    "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooW0",  # '0' is not base58
    "did:key:z" + b58encode(b"\xed\x01" + bytes(31)),  # key one byte short
    "did:key:z" + b58encode(b"\x12\x00" + bytes(32)),  # a codec we do not take (sha2-256)
    "did:key:z" + b58encode(b"\xe7\x01\x02" + b"\xff" * 32),  # not a point on secp256k1
    "did:key:z" + "1" * 600,
])
def test_malformed_did_key_is_refused(did: str) -> None:
    with pytest.raises(DidError):
        parse_did_key(did)


def test_did_pkh_round_trip_and_checksum() -> None:
    addr = LocalSigner.generate().address
    did = did_pkh("eip155:8453", addr.lower())
    assert did == f"did:pkh:eip155:8453:{addr}", "did:pkh does not carry the checksummed address"
    assert parse_did_pkh(did) == ("eip155:8453", addr), "did:pkh did not round trip"

def test_did_pkh_with_a_wrong_checksum_is_refused() -> None:
    addr = "0x71C7656EC7ab88b098defB751B7401B5f6d8976F"  # EIP-55; flip the case of one letter
    with pytest.raises(DidError):
        parse_did_pkh("did:pkh:eip155:1:0x71c7656EC7ab88b098defB751B7401B5f6d8976F")
    assert parse_did_pkh(f"did:pkh:eip155:1:{addr}")[1] == addr, "a correct checksum was refused"


@pytest.mark.parametrize("did", ["did:pkh:eip155:0:0x" + "1" * 40, "did:pkh:solana:x:abc", "did:pkh:eip155:1:0x12",
                                 "did:web:example.com"])
def test_malformed_did_pkh_is_refused(did: str) -> None:
    with pytest.raises(DidError):
        parse_did_pkh(did)


@given(st.binary(max_size=40))
@settings(max_examples=50, deadline=None)  # a busy machine must not turn a pause into a failure
def test_base58_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


# ------------------------------------------------------------------------------------------------ SIWX checks in time

URL, NET, NOW = "https://api.example.com/report", "eip155:8453", 1_800_000_000.0


def _proof(issuer: SiwxIssuer, signer: LocalSigner, now: float) -> str:
    ext = issuer.declaration(URL, [NET], now)
    payload, text = answer_challenge(ext, URL, signer.address, NET)
    return encode_proof(payload, asyncio.run(signer.sign_digest(personal_sign_digest(text))))


def test_fresh_sign_in_checks_out() -> None:
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    got = issuer.check(_proof(issuer, signer, NOW), URL, [NET], NOW + 10)
    assert isinstance(got, SiwxProof) and got.address == signer.address, f"a good sign-in failed: {got}"
    assert got.identity.did == f"did:pkh:eip155:8453:{signer.address}", "the proof's DID is wrong"


def test_expired_sign_in_is_refused() -> None:
    issuer = SiwxIssuer(b"k" * 32, ttl=300)
    got = issuer.check(_proof(issuer, LocalSigner.generate(), NOW), URL, [NET], NOW + 301 + issuer.skew)
    assert isinstance(got, SiwxFailure) and got.code == "invalid_siwx_expired", f"an expired sign-in: {got}"


def test_sign_in_from_the_future_is_refused() -> None:
    issuer = SiwxIssuer(b"k" * 32)
    got = issuer.check(_proof(issuer, LocalSigner.generate(), NOW), URL, [NET], NOW - 120)
    assert isinstance(got, SiwxFailure) and got.code == "invalid_siwx_issued_at_in_future", f"{got}"


def test_another_replicas_secret_does_not_verify() -> None:
    a, b = SiwxIssuer(b"a" * 32), SiwxIssuer(b"b" * 32)
    got = b.check(_proof(a, LocalSigner.generate(), NOW), URL, [NET], NOW)
    assert isinstance(got, SiwxFailure) and got.code == "invalid_siwx_nonce", f"{got}"


def test_origin_setting_overrides_the_host_header() -> None:
    """Behind a proxy, or with a Host header an attacker picks: the challenge names the configured origin."""
    issuer = SiwxIssuer(b"k" * 32, origin="https://api.example.com")
    ext = issuer.declaration("http://evil.example/report", [NET], NOW)
    assert ext["info"]["domain"] == "api.example.com", "the Host header chose the challenge's domain"


def test_challenge_for_another_origin_is_not_answered() -> None:
    issuer = SiwxIssuer(b"k" * 32)
    ext = issuer.declaration("https://other.example/x", [NET], NOW)
    with pytest.raises(SiweError):
        answer_challenge(ext, URL, LocalSigner.generate().address, NET)


def test_signature_not_the_addresss_asks_the_chain() -> None:
    """A signature that is not the address's own (a contract wallet's, or a forgery) is left to EIP-1271."""
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    body = json.loads(base64.b64decode(_proof(issuer, signer, NOW)))
    body["signature"] = "0x" + "11" * 96
    got = issuer.check(base64.b64encode(json.dumps(body).encode()).decode(), URL, [NET], NOW)
    assert isinstance(got, SiwxContractCheck) and got.proof.address == signer.address, f"{got}"


def test_erc6492_signature_is_left_to_the_chain_and_a_malformed_one_refused() -> None:
    """An ERC-6492 (undeployed wallet) signature goes to the chain check; one that does not decode is refused
    there with its reason, before any call."""
    from paywire.identity import erc6492

    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    body = json.loads(base64.b64decode(_proof(issuer, signer, NOW)))
    body["signature"] = "0x" + "11" * 96 + "6492" * 16
    got = issuer.check(base64.b64encode(json.dumps(body).encode()).decode(), URL, [NET], NOW)
    assert isinstance(got, SiwxContractCheck) and erc6492.is_wrapped(got.signature), f"{got}"
    with pytest.raises(ValueError):
        erc6492.unwrap(got.signature)
    wrapped = erc6492.wrap("0x" + "ab" * 20, b"\x01" * 40, b"\x02" * 65)
    assert erc6492.unwrap(wrapped) == ("0x" + "ab" * 20, b"\x01" * 40, b"\x02" * 65)


def test_message_class_checks_fields() -> None:
    with pytest.raises(SiweError):
        SiweMessage("a.b", "0x" + "1" * 40, "https://a.b", "1", 1, "abcdefgh", "2021-01-01T00:00:00Z",
                    statement="two\nlines").check()
    assert parse_time("2021-01-01T00:00:00Z") == 1609459200.0, "RFC 3339 time misread"


# ------------------------------------------------------------------------------------------------ SIWX fast paths


def _signed(issuer: SiwxIssuer, signer: LocalSigner, change: dict[str, object]) -> str:
    """A sign-in answering ``issuer``'s challenge, with the fields in ``change`` set before signing (None: left
    out), its text as :class:`SiweMessage` prints it."""
    from paywire.identity.siwx import _message_of

    payload, _ = answer_challenge(issuer.declaration(URL, [NET], NOW), URL, signer.address, NET)
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    digest = personal_sign_digest(_message_of(payload, dates=False).text())
    return encode_proof(payload, asyncio.run(signer.sign_digest(digest)))


@pytest.mark.parametrize("change", [
    {"notBefore": "2027-01-15T08:00:00.000Z"}, {"requestId": "r-1"}, {"statement": "Another statement"},
    {"statement": None}, {"resources": [URL, "ipfs://bafy"]}, {"resources": None}, {"version": "1"},
])
def test_sign_ins_our_402_did_not_word_so_still_check_out(change: dict[str, object]) -> None:
    """Well-formed sign-ins whose optional fields differ from what our 402 asked (the checks' general path)
    are accepted, signed by their address."""
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    got = issuer.check(_signed(issuer, signer, change), URL, [NET], NOW + 10)
    assert isinstance(got, SiwxProof) and got.address == signer.address, f"{change} refused: {got}"


@pytest.mark.parametrize(("change", "code"), [
    ({"nonce": "0" * 32}, "invalid_siwx_nonce"),
    ({"nonce": "abc"}, "invalid_siwx_payload"),
    ({"issuedAt": "2027-02-30T00:00:00.000Z"}, "invalid_siwx_payload"),
    ({"issuedAt": "2027-01-15T08:00:00Z"}, "invalid_siwx_nonce"),
    ({"expirationTime": None}, "invalid_siwx_nonce"),
    ({"statement": "two\nlines"}, "invalid_siwx_payload"),
    ({"requestId": 7}, "invalid_siwx_payload"),
    ({"version": "2"}, "invalid_siwx_payload"),
    ({"resources": "https://api.example.com/report"}, "invalid_siwx_payload"),
])
def test_sign_ins_that_are_not_ours_or_not_eip4361_are_refused(change: dict[str, object], code: str) -> None:
    """A changed nonce or time (the nonce's MAC covers them), a field outside the grammar: refused with the same
    reason whichever path checks it."""
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    payload = json.loads(base64.b64decode(_proof(issuer, signer, NOW)))
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    got = issuer.check(base64.b64encode(json.dumps(payload).encode()).decode(), URL, [NET], NOW + 10)
    assert isinstance(got, SiwxFailure) and got.code == code, f"{change}: {got}"


def test_mixed_case_address_with_a_wrong_checksum_is_refused() -> None:
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    payload = json.loads(base64.b64decode(_proof(issuer, signer, NOW)))
    hexpart = payload["address"][2:]
    flipped = next(i for i, c in enumerate(hexpart) if c.isalpha())
    payload["address"] = "0x" + hexpart[:flipped] + hexpart[flipped].swapcase() + hexpart[flipped + 1:]
    got = issuer.check(base64.b64encode(json.dumps(payload).encode()).decode(), URL, [NET], NOW + 10)
    assert isinstance(got, SiwxFailure) and got.code == "invalid_siwx_payload", f"a bad EIP-55 checksum: {got}"


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False))
def test_canonical_times_read_back_as_the_general_parser_reads_them(ts: float) -> None:
    """Our timestamps (to the millisecond) read back as the time they print, as ``datetime`` reads them."""
    from datetime import datetime

    text = format_time(ts)
    assert parse_time(text) == datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(), text
    ulp = abs(ts) * 2 ** -50 + 1e-9  # ts * 1000 may round up by a float's last bit (at year 6429: ~20 us)
    assert -ulp <= ts - parse_time(text) < 0.001 + ulp, f"{ts} printed as {text}"


def test_impossible_canonical_dates_are_refused() -> None:
    for text in ("2027-02-30T00:00:00.000Z", "2027-13-01T00:00:00.000Z", "2027-01-01T24:00:00.000Z"):
        with pytest.raises(SiweError):
            parse_time(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab\"\\{}é", max_size=40), st.integers(0, 2), st.lists(st.text("xyz0189:", min_size=1,
                                                                                    max_size=12), min_size=3,
                                                                           max_size=3))
def test_spliced_header_is_the_base64_of_the_filled_in_text(pad: str, shift: int, values: list[str]) -> None:
    """Wherever the stand-ins fall against base64's 3-byte groups, the header is the plain encoding of the text
    with the values in; a value of another length than its stand-in is encoded the long way, same result."""
    marks = ["@" * 12 + "m", "@" * 12 + "n", "@" * 12 + "o"]
    text = json.dumps({"p": pad, "s": "x" * shift, "a": marks[0], "b": [marks[1], {"c": marks[2]}], "z": pad})
    spliced = SplicedHeader(text.encode(), [m.encode() for m in marks])
    fitted = [(v * 13)[:13] for v in values]
    for vals in (fitted, values):
        want = text
        for m, v in zip(marks, vals, strict=True):
            want = want.replace(m, v)
        assert base64.b64decode(spliced.render(vals)).decode() == want, vals


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be", "utf-16", "utf-32", "utf-8-sig"])
def test_sign_in_header_json_in_any_encoding_json_reads_checks_out(encoding: str) -> None:
    """The header's JSON is read as ``json.loads`` reads bytes (it detects UTF-8/16/32 and BOMs): the UTF-8 fast
    path gives the same answer, and the other encodings still take the general one."""
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    body = json.loads(base64.b64decode(_proof(issuer, signer, NOW)))
    header = base64.b64encode(json.dumps(body).encode(encoding)).decode()
    assert decode_proof(header) == body, f"{encoding}: the header's JSON was misread"
    got = issuer.check(header, URL, [NET], NOW + 10)
    assert isinstance(got, SiwxProof) and got.address == signer.address, f"{encoding}: {got}"


@pytest.mark.parametrize("raw", [b"{", b'{"a":1', b"{\x00", b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b"[1]",
                                 b' {"a":1}', b'{"a":1} ', b'{"a":1}x'])
def test_sign_in_header_json_edge_cases_read_as_json_loads_reads_them(raw: bytes) -> None:
    """Truncated, NUL, invalid UTF-8, a UTF-8 encoded surrogate, not an object, whitespace, trailing bytes: the
    same verdict as ``json.loads`` on the bytes (a failure is ``invalid_siwx_header``, never an exception)."""
    try:
        expected: object = json.loads(raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        expected = None
    got = decode_proof(base64.b64encode(raw).decode())
    if isinstance(expected, dict):
        assert got == expected, f"{raw!r}: {got}"
    else:
        assert isinstance(got, SiwxFailure) and got.code == "invalid_siwx_header", f"{raw!r}: {got}"


@pytest.mark.parametrize("chain", [8453, ["eip155:8453"], {"a": 1}, None, True, "solana:x"])
def test_sign_in_on_a_chain_that_is_not_a_listed_string_is_refused(chain: object) -> None:
    issuer, signer = SiwxIssuer(b"k" * 32), LocalSigner.generate()
    payload = json.loads(base64.b64decode(_proof(issuer, signer, NOW)))
    payload["chainId"] = chain
    got = issuer.check(base64.b64encode(json.dumps(payload).encode()).decode(), URL, [NET], NOW + 10)
    assert isinstance(got, SiwxFailure) and got.code == "invalid_siwx_unsupported_chain", f"{chain!r}: {got}"
