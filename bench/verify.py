"""EIP-3009 payment verification throughput: paywire vs the official x402 Python SDK vs the raw limit.

    python bench/verify.py [--n 2000] [--official-n 200] [--runs 3] [--json]

One run, one set of ``--n`` distinct payloads (random payers and nonces, signed by paywire's client) for one
``exact`` offer, all valid. Every measurement is off-chain (no RPC): warm-up first, then ``--runs`` full
passes, keeping each one's best (passes of different measurements are interleaved 100 payloads at a time so
noise on a shared box hits them alike; cyclic GC off while timing, like ``timeit``):

* ``paywire``           — ``check_offchain(payload, offer, now)`` on the parsed ``PaymentPayload``: every field
                          check, the EIP-712 digest and libsecp256k1 recovery (what our facilitator runs before
                          touching the chain).
* ``paywire + decode``  — the same, starting from the ``PAYMENT-SIGNATURE`` header string
                          (``decode_payment_signature``).
* ``paywire, keccak from pycryptodome`` — the first line again with paywire's keccak fallback, i.e. without
                          the optional ``safe-pysha3`` (informational).
* ``official``          — the SDK facilitator's EIP-3009 verification (``ExactEvmFacilitatorScheme._verify(...,
                          simulate=False)``: scheme/network/domain/recipient/amount/time checks,
                          ``classify_eip3009_signature`` = its EIP-712 hash + ``verify_eoa_signature``) on the
                          SDK's parsed ``PaymentPayload``, with a no-RPC signer (payer has no code, asset has code).
                          As it installs by default (``pip install x402[evm]`` brings no coincurve) eth_keys uses
                          its pure-Python ``NativeECCBackend``; that is slow, so it is timed on the first
                          ``--official-n`` payloads. Also shown with the ``CoinCurveECCBackend``, which eth_keys
                          picks when coincurve happens to be installed.
* ``raw limit``         — our flat EIP-712 digest (domain separator precomputed) + libsecp256k1 public-key
                          recovery (``paywire.evm.crypto.recover_pubkey``), nothing else.

Prints ``ratio vs official: X`` (paywire / official as installed) and ``fraction of limit: Y``
(paywire / raw limit). Goal: X ≥ 50 and Y ≥ 0.6.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from paywire.evm import crypto as pw_crypto
from paywire.evm.assets import Asset
from paywire.evm.crypto import address_bytes, recover_pubkey
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_exact import ExactEvmClient, check_offchain, exact_evm_offer
from paywire.schemes.evm_exact.facilitator import CheckedAuthorization
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.x402.codec import decode_payment_signature, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements

NATIVE = "eth_keys.backends.NativeECCBackend"
COINCURVE = "eth_keys.backends.CoinCurveECCBackend"

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"  # first contract of the dev deployer (anvil/embedded)
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@dataclass
class Result:
    name: str
    n: int  # payloads per timed run
    best_s: float  # best run, seconds
    runs: list[float]
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.n / self.best_s

    @property
    def us_per_op(self) -> float:
        return self.best_s / self.n * 1e6


@dataclass
class Case:
    key: str
    name: str
    fn: Callable[[Any], object]
    items: Sequence[Any]
    warmup: int | None = None  # items used for warm-up (None: all)
    backend: str | None = None  # eth_keys backend to select while this case runs
    note: str = ""
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext


def measure(cases: Sequence[Case], runs: int, chunk: int = 100) -> dict[str, Result]:
    """Warm every case up, then time ``runs`` rounds. In a round every case makes one full pass over its
    items, and the passes are interleaved ``chunk`` items at a time, so background noise on a small shared
    box hits all cases alike. The cyclic GC is off while timing (like ``timeit``). Keep each case's best pass.
    """
    times: dict[str, list[float]] = {c.key: [] for c in cases}
    for c in cases:
        with ecc_backend(c.backend), c.context():
            for it in c.items[: len(c.items) if c.warmup is None else c.warmup]:
                c.fn(it)
    for _ in range(runs):
        spent = dict.fromkeys(times, 0.0)
        gc.collect()
        gc.disable()
        try:
            for start in range(0, max(len(c.items) for c in cases), chunk):
                for c in cases:
                    part = c.items[start:start + chunk]
                    if not part:
                        continue
                    with ecc_backend(c.backend), c.context():
                        fn = c.fn
                        t0 = time.perf_counter()
                        for it in part:
                            fn(it)
                        spent[c.key] += time.perf_counter() - t0
        finally:
            gc.enable()
        for key, t in spent.items():
            times[key].append(t)
    return {c.key: Result(c.name, len(c.items), min(times[c.key]), times[c.key], c.note) for c in cases}


# ------------------------------------------------------------------------------------------------
# payloads
# ------------------------------------------------------------------------------------------------


def make_offer() -> PaymentRequirements:
    # a one-hour window so no payload nears validBefore (now + 6) while the benchmark runs
    return exact_evm_offer(Asset("eip155:31337", TOKEN, "USD Coin", "2"), PAY_TO, amount=10_000,
                           max_timeout_seconds=3600)


def make_payloads(req: PaymentRequirements, n: int) -> list[PaymentPayload]:
    async def one() -> PaymentPayload:
        inner = await ExactEvmClient(LocalSigner.generate()).create_payload(req)
        return PaymentPayload(accepted=req, payload=inner)

    async def all_() -> list[PaymentPayload]:
        return [await one() for _ in range(n)]

    payloads = asyncio.run(all_())
    nonces = {ExactEvmPayload.from_wire(p.payload).authorization.nonce for p in payloads}
    payers = {ExactEvmPayload.from_wire(p.payload).authorization.from_ for p in payloads}
    assert len(nonces) == len(payers) == n, "payloads are not distinct"
    return payloads


# ------------------------------------------------------------------------------------------------
# the official SDK, without RPC
# ------------------------------------------------------------------------------------------------


class NoRpcSigner:
    """``FacilitatorEvmSigner`` for off-chain verification: payers are code-less EOAs, the asset has code."""

    def __init__(self, asset: str) -> None:
        self.asset = asset.lower()

    def get_addresses(self) -> list[str]:
        return ["0x0000000000000000000000000000000000000001"]

    def get_code(self, address: str) -> bytes:
        return b"\x01" if address.lower() == self.asset else b""

    def read_contract(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - simulate=False
        raise AssertionError("no RPC in this benchmark")


@contextlib.contextmanager
def ecc_backend(path: str | None) -> Iterator[str]:
    """Select eth_keys' backend (it reads ``ECC_BACKEND_CLASS`` on every ``Signature`` recovery) and report
    the class actually in use; ``None`` changes nothing."""
    from eth_keys.backends import get_backend

    if path is None:
        yield ""
        return
    old = os.environ.get("ECC_BACKEND_CLASS")
    os.environ["ECC_BACKEND_CLASS"] = path
    try:
        active = type(get_backend()).__name__
        assert active == path.rsplit(".", 1)[1], active
        yield active
    finally:
        if old is None:
            os.environ.pop("ECC_BACKEND_CLASS", None)
        else:
            os.environ["ECC_BACKEND_CLASS"] = old


def official_verifier(req: PaymentRequirements) -> Callable[[Any], Any]:
    from x402 import PaymentRequirements as SdkRequirements
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme

    scheme = ExactEvmFacilitatorScheme(NoRpcSigner(req.asset))  # type: ignore[arg-type]
    sdk_req = SdkRequirements.model_validate(req.to_wire())

    def verify(sdk_payload: Any) -> Any:
        return scheme._verify(sdk_payload, sdk_req, simulate=False)[0]

    return verify


@contextlib.contextmanager
def pycryptodome_keccak() -> Iterator[None]:
    """paywire's keccak fallback (pycryptodome), i.e. what ``pip install paywire`` gets without the optional
    safe-pysha3: swap the module globals its hot path calls, restore them afterwards."""
    from Crypto.Hash import keccak as _keccak

    from paywire.evm import eip712 as pw_eip712

    def keccak256(data: bytes) -> bytes:
        return _keccak.new(digest_bits=256, data=data).digest()

    modules = (pw_crypto, pw_eip712)  # eip712 imported keccak256 by name: patch both globals
    saved = [m.__dict__["keccak256"] for m in modules]
    for m in modules:
        m.__dict__["keccak256"] = keccak256
    try:
        yield
    finally:
        for m, old in zip(modules, saved, strict=True):
            m.__dict__["keccak256"] = old


def keccak_backends() -> tuple[str, str]:
    ours = "safe-pysha3" if hasattr(pw_crypto, "_sha3") else "pycryptodome"
    try:
        from eth_hash.utils import auto_choose_backend

        theirs = type(auto_choose_backend()).__module__.rsplit(".", 1)[-1]
    except Exception:  # pragma: no cover - eth_hash internals moved
        theirs = "?"
    return ours, theirs


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def run(n: int, official_n: int, runs: int) -> dict[str, Any]:
    t_start = time.perf_counter()
    req = make_offer()
    payloads = make_payloads(req, n)
    headers = [encode_payment_payload(p) for p in payloads]

    # -- paywire ------------------------------------------------------------------------------------
    def ours(p: PaymentPayload) -> object:
        return check_offchain(p, req, int(time.time()))

    def ours_header(h: str) -> object:
        return check_offchain(decode_payment_signature(h), req, int(time.time()))  # type: ignore[arg-type]

    for p in payloads:
        c = ours(p)
        assert isinstance(c, CheckedAuthorization) and c.signer_ok, c

    # -- raw limit: digest + recovery only -----------------------------------------------------------
    domain = domain_separator("USD Coin", "2", 31337, TOKEN)
    raw_items = []
    for p in payloads:
        inner = ExactEvmPayload.from_wire(p.payload)
        a = inner.authorization
        raw_items.append((address_bytes(a.from_), address_bytes(a.to), a.value, a.valid_after, a.valid_before,
                          a.nonce, inner.signature))

    def raw(item: tuple[bytes, bytes, int, int, int, bytes, bytes]) -> object:
        f, t, v, va, vb, nonce, sig = item
        return recover_pubkey(transfer_authorization_digest(domain, f, t, v, va, vb, nonce), sig)

    assert all(pw_crypto.keccak256(raw(it))[12:] == it[0] for it in raw_items)  # type: ignore[arg-type]

    # -- official ------------------------------------------------------------------------------------
    from x402 import PaymentPayload as SdkPayload

    official = official_verifier(req)
    sdk_payloads = [SdkPayload.model_validate(p.to_wire()) for p in payloads]

    subset = sdk_payloads[:official_n]
    with ecc_backend(COINCURVE) as cc_name:
        assert all(official(sp).is_valid for sp in sdk_payloads)
    with ecc_backend(NATIVE) as native_name:
        assert all(official(sp).is_valid for sp in subset[:5])

    results = measure([
        Case("ours", "paywire check_offchain (parsed payload)", ours, payloads),
        Case("raw", "raw limit: EIP-712 digest + libsecp256k1 recover", raw, raw_items),
        Case("ours_decode", "paywire decode header + check_offchain", ours_header, headers),
        Case("ours_pycryptodome", "paywire check_offchain, keccak from pycryptodome", ours, payloads,
             context=pycryptodome_keccak),
        Case("official_cc", "official SDK verify, eth_keys coincurve", official, sdk_payloads,
             backend=COINCURVE, note=cc_name),
        Case("official", "official SDK verify, as installed (pure Python)", official, subset,
             warmup=min(20, len(subset)), backend=NATIVE, note=native_name),
    ], runs)

    ours_rate = results["ours"].per_second
    ratio = ours_rate / results["official"].per_second
    ratio_cc = ours_rate / results["official_cc"].per_second
    fraction = ours_rate / results["raw"].per_second
    k_ours, k_theirs = keccak_backends()
    import x402

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "x402_version": getattr(x402, "__version__", "?"),
        "payloads": n,
        "official_subset": len(subset),
        "runs": runs,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "keccak": {"paywire": k_ours, "official": k_theirs},
        "results": {
            k: {"name": r.name, "n": r.n, "per_second": round(r.per_second, 1), "us_per_op": round(r.us_per_op, 2),
                "best_s": r.best_s, "runs_s": r.runs, "note": r.note}
            for k, r in results.items()
        },
        "ratio_vs_official": ratio,
        "ratio_vs_official_coincurve": ratio_cc,
        "fraction_of_limit": fraction,
        "elapsed_s": time.perf_counter() - t_start,
    }


def print_text(out: dict[str, Any]) -> None:
    r = out["results"]
    print(f"EIP-3009 verification, no RPC — {out['payloads']} distinct payloads, best of {out['runs']} "
          f"(after warm-up); x402 {out['x402_version']}; {out['machine']}")
    print(f"keccak: paywire={out['keccak']['paywire']}, official={out['keccak']['official']}; "
          f"load average (1 min) at the end: {out['load_average_1m']}")
    print(f"{'measurement':<52} {'payloads':>8} {'verif/s':>11} {'µs/op':>9}  note")
    for key in ("ours", "ours_decode", "ours_pycryptodome", "official", "official_cc", "raw"):
        x = r[key]
        note = x["note"]
        if key == "ours_pycryptodome":
            note = "paywire's fallback when safe-pysha3 is not installed"
        if key == "official":
            note = f"eth_keys {note}; first {x['n']} of the {out['payloads']} payloads"
        elif key == "official_cc":
            note = f"eth_keys {note}; if coincurve happens to be installed"
        print(f"{x['name']:<52} {x['n']:>8} {x['per_second']:>11,.0f} {x['us_per_op']:>9.1f}  {note}")
    print(f"ratio vs official (coincurve backend): {out['ratio_vs_official_coincurve']:.2f}")
    print(f"elapsed: {out['elapsed_s']:.1f} s")
    print(f"ratio vs official: {out['ratio_vs_official']:.2f}")
    print(f"fraction of limit: {out['fraction_of_limit']:.2f}")
    print(f"aim ratio_vs_official: {out['ratio_vs_official']:.2f} (target >= 50)")
    print(f"aim fraction_of_limit: {out['fraction_of_limit']:.2f} (target >= 0.6)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="distinct signed payloads (default 2000)")
    ap.add_argument("--official-n", type=int, default=200,
                    help="payloads timed for the pure-Python official path (default 200; capped at --n)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per measurement; the best is kept (default 3)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
    args = ap.parse_args(argv)
    if args.n < 1 or args.official_n < 1 or args.runs < 1:
        ap.error("--n, --official-n and --runs must be positive")
    out = run(args.n, min(args.official_n, args.n), args.runs)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_text(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
