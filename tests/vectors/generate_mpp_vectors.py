"""Generate ``mpp_vectors.json`` from the official Python MPP SDK (``pympp``, pinned in pyproject).

Run: ``.venv/bin/python tests/vectors/generate_mpp_vectors.py`` — rewrites the JSON next to this file.
Every expected value comes from pympp's own functions (and ``rfc8785``, which pympp uses for JCS); the
inputs are fixed so the output is deterministic. ``tests/test_mpp_vectors.py`` checks paywire against it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import rfc8785
from mpp import Challenge, Credential, Receipt, generate_challenge_id
from mpp import _b64url_encode_bytes as pympp_b64url
from mpp import _body_digest as body_digest
from mpp._canonical import canonical_b64url

OUT = Path(__file__).with_name("mpp_vectors.json")
SECRET = "paywire-vectors-secret-0123456789abcdef"  # >= 32 bytes
PAYER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # dev key #2 (anvil)
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

JCS_INPUTS: list[Any] = [
    {"b": 1, "a": [True, False, None], "c": {"y": "z", "x": 1.5}},
    {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
     "string": "\u20ac$\u000f\nA'B\"\\\\\"/", "literals": [None, True, False]},
    {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
     "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"},
    [0.0, -0.0, 1e21, 1e-7, 123456789012345680000.0, 5e-324, 1.7976931348623157e308, 9007199254740991, -9007199254740991],
    {"amount": "10000", "currency": TOKEN, "recipient": RECIPIENT,
     "methodDetails": {"chainId": 31337, "credentialTypes": ["authorization"], "decimals": 6}},
    {"empty": {}, "list": [], "nested": [[[]]], "unicode": "caf\u00e9 \u65e5\u672c \U0001f680", "ctl": "\x00\x1f\x7f"},
]

B64_INPUTS = [b"", b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", bytes(range(256)), b"\xfb\xff\xfe"]

CHALLENGE_CASES: list[dict[str, Any]] = [
    {"realm": "api.example.com", "method": "evm", "intent": "charge",
     "request": JCS_INPUTS[4], "expires": "2099-01-01T00:00:00.000Z"},
    {"realm": "api.example.com", "method": "lightning", "intent": "charge",
     "request": {"amount": "21", "currency": "sat", "methodDetails": {"invoice": "lnbc210n1p", "network": "regtest"}},
     "expires": "2099-01-01T00:00:00Z", "digest": "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
     "description": "Weather report", "meta": {"order": "42", "_mpp_nonce": "00" * 32}},
    {"realm": "127.0.0.1", "method": "tempo", "intent": "charge", "request": {"amount": "1", "currency": "usd"}},
    {"realm": "r", "method": "stripe", "intent": "charge", "request": {"amount": "100", "currency": "usd"},
     "expires": "2099-01-01T00:00:00Z", "header": "Payment-Authorization", "meta": {"k": "v"}},
    {"realm": "quotes \"and\" \\slashes", "method": "vendor:x_y-z", "intent": "session",
     "request": {"a": "b"}, "description": "say \"hi\""},
]

RECEIPTS: list[dict[str, Any]] = [
    {"reference": "0x" + "ab" * 32, "method": "evm", "timestamp": datetime(2026, 1, 15, 12, 0, tzinfo=UTC)},
    {"reference": "cd" * 32, "method": "lightning", "timestamp": datetime(2026, 3, 10, 21, 0, 0, 123000, tzinfo=UTC),
     "extensions": {"challengeId": "kM9xPqWvT2nJrHsY4aDfEb"}},
    {"reference": "pi_123", "method": "stripe", "timestamp": datetime(2026, 2, 1, tzinfo=UTC),
     "external_id": "order-9"},
]


def challenge_vectors() -> list[dict[str, Any]]:
    out = []
    for case in CHALLENGE_CASES:
        args = {k: v for k, v in case.items() if k not in ("meta", "description")}
        cid = generate_challenge_id(secret_key=SECRET, opaque=case.get("meta"), **args)
        ch = Challenge.create(secret_key=SECRET, **case)
        assert ch.id == cid
        out.append({"input": case, "id": cid, "request_b64": ch.request_b64,
                    "opaque_b64": canonical_b64url(case["meta"]) if "meta" in case else None,
                    "www_authenticate": ch.to_www_authenticate(case["realm"])})
    return out


def credential_vectors() -> list[dict[str, Any]]:
    out = []
    for i, case in enumerate(CHALLENGE_CASES):
        ch = Challenge.create(secret_key=SECRET, **case)
        cred = Credential(challenge=ch.to_echo(), payload={"preimage": f"{i:02x}" * 32, "n": i},
                          source=f"did:example:{i}" if i % 2 else None)
        out.append({"authorization": cred.to_authorization(), "challenge_index": i,
                    "decoded": json.loads(_b64dec(cred.to_authorization().split(" ", 1)[1]))})
    return out


def receipt_vectors() -> list[dict[str, Any]]:
    out = []
    for r in RECEIPTS:
        rec = Receipt(status="success", **r)
        header = rec.to_payment_receipt()
        out.append({"header": header, "decoded": json.loads(_b64dec(header))})
    return out


def evm_vectors() -> dict[str, Any]:
    """challenge_hash (pympp's JSON-array form) and a complete signed evm/charge credential from pympp's client."""
    from eth_account import Account
    from mpp.methods.evm._eip3009 import challenge_hash
    from mpp.methods.evm.client import _config

    hashes = [{"id": i, "realm": r, "json_hash": challenge_hash(i, r)}
              for i, r in [("abc", "api.example.com"), ("LvK3ouyTMheQxH6jk33U3v8A-WY-e2DAOfD--zMUH50", "127.0.0.1"),
                           ("x", "caf\u00e9")]]
    case = CHALLENGE_CASES[0]
    ch = Challenge.create(secret_key=SECRET, meta={"_mpp_nonce": "11" * 32}, **case)
    cfg = _config(currency=TOKEN, chain_id=31337, decimals=6, account=Account.from_key(PAYER_KEY),
                  authorization={"name": "USD Coin", "version": "2"})
    cred = asyncio.run(cfg.create_credential(ch))
    return {"challenge_hashes": hashes, "secret": SECRET, "token": TOKEN, "recipient": RECIPIENT,
            "token_name": "USD Coin", "token_version": "2", "chain_id": 31337,
            "payer": Account.from_key(PAYER_KEY).address,
            "challenge": ch.to_www_authenticate(ch.realm), "authorization": cred.to_authorization()}


TEMPO_EXPIRES = "2030-01-01T00:00:00.000Z"
PATH_USD = "0x20c0000000000000000000000000000000000000"
SPLIT_RECIPIENT = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
TEMPO_INPUTS: list[dict[str, Any]] = [
    {"amount": "1.5", "currency": PATH_USD, "recipient": RECIPIENT, "chain_id": 42431},
    {"amount": "0.25", "currency": PATH_USD, "recipient": RECIPIENT, "chain_id": 42431, "fee_payer": True,
     "external_id": "order-42"},
    {"amount": "10", "currency": PATH_USD, "recipient": RECIPIENT,
     "splits": [{"amount": "1250000", "recipient": SPLIT_RECIPIENT, "memo": "0x" + "0f" * 32}],
     "extra": {"sku": "w-1"}},
]
STRIPE_INPUTS: list[dict[str, Any]] = [
    {"amount": "12.34", "currency": "usd", "network_id": "bn_test_paywire", "payment_method_types": ["card"],
     "metadata": {"plan": "pro"}, "external_id": "order-9"},
    {"amount": "1", "currency": "usd", "network_id": "bn_test_paywire", "payment_method_types": ["card", "link"],
     "recipient": "acct_123"},
]


def tempo_stripe_vectors() -> dict[str, Any]:
    """tempo/stripe requests from pympp's ChargeInput serializers, SDK-built credentials and receipts.

    pympp 0.16 signs Tempo transactions only with the optional ``pytempo`` (not installed), so its Tempo
    credentials here are push-mode ``hash`` payloads; signed transactions come from mppx.
    """
    from mpp.methods.stripe.client import StripeMethod
    from mpp.methods.stripe.schemas import ChargeRequest as StripeRequest
    from mpp.methods.stripe.schemas import StripeCredentialPayload
    from mpp.methods.stripe.schemas import charge as stripe_charge
    from mpp.methods.tempo._attribution import encode as attribution
    from mpp.methods.tempo.schemas import ChargePayload
    from mpp.methods.tempo.schemas import ChargeRequest as TempoRequest
    from mpp.methods.tempo.schemas import charge as tempo_charge

    async def create_token(params: Any) -> str:
        return f"spt_pympp_{params.amount}"

    challenges, credentials = [], []
    cases = [("tempo", i, tempo_charge.request_model(**i)) for i in TEMPO_INPUTS]
    cases += [("stripe", i, stripe_charge.request_model(**i)) for i in STRIPE_INPUTS]
    for n, (method, given, model) in enumerate(cases):
        request = model.model_dump()
        (TempoRequest if method == "tempo" else StripeRequest).model_validate(request)
        extra: dict[str, Any] = {"description": "Pro plan", "meta": {"order": "42"}} if n % 2 else {}
        ch = Challenge.create(secret_key=SECRET, realm="api.example.com", method=method, intent="charge",
                              request=request, expires=TEMPO_EXPIRES, **extra)
        challenges.append({"input": given, "request": request, "realm": ch.realm, "expires": TEMPO_EXPIRES,
                           **extra, "id": ch.id, "request_b64": ch.request_b64,
                           "www_authenticate": ch.to_www_authenticate(ch.realm)})
        if method == "tempo":
            chain = request.get("methodDetails", {}).get("chainId", 4217)
            cred = Credential(challenge=ch.to_echo(), payload={"type": "hash", "hash": f"0x{n + 1:064x}"},
                              source=f"did:pkh:eip155:{chain}:{RECIPIENT}")
            ChargePayload.model_validate(cred.payload)
        else:
            cred = asyncio.run(StripeMethod(create_token=create_token, payment_method="pm_card_visa")
                               .create_credential(ch))
            StripeCredentialPayload.model_validate(cred.payload)
        auth = cred.to_authorization()
        credentials.append({"challenge_index": n, "authorization": auth,
                            "decoded": json.loads(_b64dec(auth.split(" ", 1)[1]))})
    receipts = []
    for rec in [Receipt.success("0x" + "cd" * 32, datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC), "tempo",
                                funding_currency=PATH_USD),
                Receipt.success("pi_3PaywireVectors", datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC), "stripe",
                                external_id="order-9")]:
        header = rec.to_payment_receipt()
        receipts.append({"header": header, "decoded": json.loads(_b64dec(header))})
    memos = [{"challenge_id": c, "server_id": s, "client_id": k, "memo": attribution(c, s, k)}
             for c, s, k in [("abc", "api.example.com", None), (challenges[0]["id"], "shop.example", "my-agent")]]
    return {"challenges": challenges, "credentials": credentials, "receipts": receipts, "attribution_memos": memos}


def _b64dec(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main() -> int:
    data = {
        "generator": f"pympp {version('pympp')}, rfc8785 {version('rfc8785')}",
        "secret": SECRET,
        "jcs": [{"input": v, "canonical": rfc8785.dumps(v).decode("utf-8"),
                 "b64url": canonical_b64url(v) if isinstance(v, dict) else None} for v in JCS_INPUTS],
        "base64url": [{"hex": b.hex(), "b64url": pympp_b64url(b)} for b in B64_INPUTS],
        "challenges": challenge_vectors(),
        "credentials": credential_vectors(),
        "receipts": receipt_vectors(),
        "body_digests": [{"body": b, "digest": body_digest.compute(b)} for b in ["", '{"q":1}', "hello\n"]],
        "evm": evm_vectors(),
        "tempo_stripe": tempo_stripe_vectors(),
    }
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({data['generator']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
