"""paywire against byte vectors produced by the official Python MPP SDK.

``tests/vectors/mpp_vectors.json`` is written by ``tests/vectors/generate_mpp_vectors.py`` (which imports
pympp); the last test re-runs the generator when pympp is installed and checks the file is current.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paywire.mpp.b64 import b64url_decode, b64url_encode
from paywire.mpp.challenge import Challenge, ChallengeBinder, encode_json_param, parse_www_authenticate
from paywire.mpp.credential import parse_authorization
from paywire.mpp.digest import digest_matches
from paywire.mpp.jcs import canonicalize
from paywire.mpp.methods.evm_charge import CONCAT, JSON_ARRAY, EvmAuthorization, challenge_hash
from paywire.mpp.receipt import Receipt

VECTORS = Path(__file__).parent / "vectors" / "mpp_vectors.json"
V = json.loads(VECTORS.read_text())
BINDER = ChallengeBinder([V["secret"]])


@pytest.mark.parametrize("case", V["jcs"], ids=lambda c: str(c["canonical"])[:30])
def test_jcs_matches_sdk(case):
    """Checklist 105: JCS bytes equal pympp/rfc8785's; dict requests also equal pympp's canonical_b64url."""
    assert canonicalize(case["input"]).decode("utf-8") == case["canonical"]
    if case["b64url"] is not None:
        assert encode_json_param(case["input"]) == case["b64url"]


@pytest.mark.parametrize("case", V["base64url"], ids=lambda c: c["b64url"][:12] or "empty")
def test_base64url_matches_sdk(case):
    assert b64url_encode(bytes.fromhex(case["hex"])) == case["b64url"]
    assert b64url_decode(case["b64url"]).hex() == case["hex"]


@pytest.mark.parametrize("case", V["challenges"], ids=lambda c: c["input"]["method"])
def test_challenge_id_header_and_parse_match_sdk(case):
    """Checklist 107: same HMAC id; our header is byte-identical and parses back to the same challenge."""
    i = case["input"]
    ours = Challenge.create(BINDER, realm=i["realm"], method=i["method"], intent=i["intent"], request=i["request"],
                           expires=i.get("expires"), digest=i.get("digest"), description=i.get("description"),
                           opaque=i.get("meta"), header=i.get("header"))
    assert ours.id == case["id"]
    assert ours.request_b64 == case["request_b64"] and ours.opaque_b64 == case["opaque_b64"]
    assert ours.to_header() == case["www_authenticate"]
    [parsed] = parse_www_authenticate(case["www_authenticate"])
    assert parsed == ours
    assert parsed.verify_id(BINDER)


@pytest.mark.parametrize("case", V["credentials"], ids=lambda c: str(c["challenge_index"]))
def test_credentials_match_sdk(case):
    """Checklist 106: SDK credentials parse; our encoding of the same credential is byte-identical."""
    cred = parse_authorization(case["authorization"])
    assert cred.to_wire() == case["decoded"]
    assert cred.to_authorization() == case["authorization"]
    src = V["challenges"][case["challenge_index"]]
    assert cred.challenge.id == src["id"] and cred.challenge.request == src["request_b64"]
    assert BINDER.matches(cred.challenge.id, cred.challenge.realm, cred.challenge.method, cred.challenge.intent,
                          cred.challenge.request, cred.challenge.expires, cred.challenge.digest,
                          cred.challenge.opaque, header=cred.challenge.header)


@pytest.mark.parametrize("case", V["receipts"], ids=lambda c: c["decoded"]["method"])
def test_receipts_match_sdk(case):
    """Checklist 111: SDK receipts parse, and re-encode to the same bytes."""
    r = Receipt.from_header(case["header"])
    assert r.to_wire() == case["decoded"]
    assert r.to_header() == case["header"]


@pytest.mark.parametrize("case", V["body_digests"], ids=lambda c: repr(c["body"])[:10])
def test_body_digest_in_sdk_form_verifies(case):
    """Checklist 112: pympp's ``sha-256=<b64>`` digests verify against the same body, and only that body."""
    assert digest_matches(case["digest"], case["body"].encode())
    assert not digest_matches(case["digest"], case["body"].encode() + b"x")


def test_evm_challenge_hash_variants():
    """pympp hashes JSON.stringify([id, realm]); the spec/mppx hash is keccak(id ‖ realm) (they differ)."""
    for h in V["evm"]["challenge_hashes"]:
        assert "0x" + challenge_hash(h["id"], h["realm"], JSON_ARRAY).hex() == h["json_hash"]
        assert challenge_hash(h["id"], h["realm"], CONCAT) != challenge_hash(h["id"], h["realm"], JSON_ARRAY)
    # the spec-digest's independent check value for id="abc", realm="api.example.com"
    assert challenge_hash("abc", "api.example.com", CONCAT).hex().startswith("e1adfd8f")


def test_pympp_signed_evm_credential_parses_and_binds():
    """A credential signed by pympp's evm client: our parser, binder and payload model accept it."""
    e = V["evm"]
    [ch] = parse_www_authenticate(e["challenge"])
    assert ch.verify_id(BINDER)
    cred = parse_authorization(e["authorization"])
    auth = EvmAuthorization.from_payload(cred.payload)
    assert auth.nonce == challenge_hash(ch.id, ch.realm, JSON_ARRAY)
    assert auth.from_ == e["payer"] and cred.source == f"did:pkh:eip155:{e['chain_id']}:{e['payer']}"


def test_vectors_file_is_what_the_generator_writes(tmp_path):
    """Re-run the generator against the installed pympp: the committed JSON must be current."""
    pytest.importorskip("mpp", reason="pympp (the official MPP SDK) is not installed")
    script = Path(__file__).parent / "vectors" / "generate_mpp_vectors.py"
    code = (f"import runpy, pathlib; g = runpy.run_path({str(script)!r}, run_name='gen'); "
            f"g['OUT'] = pathlib.Path({str(tmp_path / 'v.json')!r}); g['main'].__globals__['OUT'] = g['OUT']; "
            "g['main']()")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    fresh = json.loads((tmp_path / "v.json").read_text())
    fresh_evm, old_evm = fresh.pop("evm"), dict(V["evm"])
    old = {k: v for k, v in V.items() if k != "evm"}
    assert fresh == old
    old_evm.pop("authorization"), fresh_evm.pop("authorization")  # ECDSA via eth-account is deterministic,
    assert fresh_evm == old_evm  # but keep the comparison robust to signer-library upgrades
