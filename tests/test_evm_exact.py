"""exact/EVM via EIP-3009: our client signs, our facilitator verifies and settles on a real EVM.

Each negative test sends a payload that fails exactly one check of spec-digest §12.4 (checklist numbers cited).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import pytest_asyncio

from paywire.chain.tx import TxSender
from paywire.evm import token
from paywire.evm.artifacts import load_artifact
from paywire.evm.crypto import address_bytes, keccak256
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_exact.facilitator import check_offchain
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.x402.models import PaymentPayload
from tests.helpers import CHAIN_KINDS, close_devnet, facilitator_for, new_devnet, offer, payer_of, sign

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=CHAIN_KINDS)
async def net(request):
    n = await new_devnet(request.param)
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fac(net):
    return facilitator_for(net)


async def balances(net, *addrs):
    return [await net.token_balance(a) for a in addrs]


async def test_sign_verify_settle_moves_tokens(net, fac):
    """Checklist 31/32 (client), 54/56 (facilitator): a valid payment verifies and settles; balances move."""
    req = offer(net, 12_345)
    p = await sign(req, payer_of(net))
    before = await balances(net, net.payer.address, net.payee.address)
    v = await fac.verify(p, req)
    assert v.is_valid and v.payer == net.payer.address
    s = await fac.settle(p, req)
    assert s.success, s
    assert s.transaction.startswith("0x") and s.network == net.info.network and s.payer == net.payer.address
    after = await balances(net, net.payer.address, net.payee.address)
    assert after[0] == before[0] - 12_345 and after[1] == before[1] + 12_345
    receipt = await net.chain.get_transaction_receipt(s.transaction)
    assert receipt is not None and receipt.status == 1


async def test_client_window_and_nonce(net):
    """Checklist 31: to=payTo, value=amount, 32-byte random nonce, validAfter=now-600, validBefore=now+maxTimeout."""
    req = offer(net, 1)
    start = int(time.time())
    a = ExactEvmPayload.from_wire((await sign(req, payer_of(net))).payload).authorization
    end = int(time.time())  # the signing clock read a second in [start, end], however slow the machine
    b = ExactEvmPayload.from_wire((await sign(req, payer_of(net))).payload).authorization
    assert a.to == req.pay_to and a.value == 1 and len(a.nonce) == 32 and a.nonce != b.nonce
    assert start - 601 <= a.valid_after <= end - 599
    assert start + req.max_timeout_seconds - 1 <= a.valid_before <= end + req.max_timeout_seconds + 1


async def test_replay_after_settlement_is_refused(net, fac):
    """Checklist 55: an already-used authorization is invalid; the replay moves nothing."""
    req = offer(net)
    p = await sign(req, payer_of(net))
    assert (await fac.settle(p, req)).success
    before = await balances(net, net.payer.address)
    v = await fac.verify(p, req)
    assert not v.is_valid and v.invalid_reason == "invalid_exact_evm_nonce_already_used"
    s = await fac.settle(p, req)
    assert not s.success and s.error_reason == "invalid_exact_evm_nonce_already_used" and s.transaction == ""
    assert await balances(net, net.payer.address) == before


async def test_concurrent_settles_of_one_payment_send_one_transaction(net, fac):
    """Money safety: 10 concurrent settles of one payload share one transaction and move the amount once."""
    req = offer(net, 777)
    p = await sign(req, payer_of(net))
    before = await balances(net, net.payer.address)
    results = await asyncio.gather(*(fac.settle(p, req) for _ in range(10)))
    hashes = {r.transaction for r in results if r.success}
    assert len(hashes) == 1
    assert await balances(net, net.payer.address) == [before[0] - 777]


async def test_scheme_mismatch(net, fac):
    """Checklist 41/42: a scheme other than exact → unsupported_scheme."""
    req = offer(net)
    p = await sign(req, payer_of(net))
    bad = dataclasses.replace(p, accepted=dataclasses.replace(req, scheme="upto"))
    assert (await fac.verify(bad, req)).invalid_reason == "unsupported_scheme"


async def test_network_mismatch(net, fac):
    """Checklist 42: accepted.network differs from the requirements → network_mismatch."""
    req = offer(net)
    p = await sign(req, payer_of(net))
    bad = dataclasses.replace(p, accepted=dataclasses.replace(req, network="eip155:8453"))
    assert (await fac.verify(bad, req)).invalid_reason == "network_mismatch"


async def test_wrong_chain_is_refused(net, fac):
    """A payment for a chain this facilitator does not settle on is refused before any RPC."""
    req = offer(net, network="eip155:1")
    p = await sign(req, payer_of(net))
    assert (await fac.verify(p, req)).invalid_reason == "invalid_network"


async def test_missing_eip712_domain(net, fac):
    """Checklist 47: extra without name/version → missing_eip712_domain."""
    req = offer(net)
    p = await sign(req, payer_of(net))
    bare = dataclasses.replace(req, extra={"name": "USD Coin"})
    p2 = dataclasses.replace(p, accepted=bare)
    assert (await fac.verify(p2, bare)).invalid_reason == "missing_eip712_domain"


async def test_recipient_mismatch(net, fac):
    """Checklist 48: authorization.to ≠ payTo → recipient_mismatch (case-insensitive comparison)."""
    req = offer(net)
    thief = LocalSigner.generate().address
    p = await sign(dataclasses.replace(req, pay_to=thief), payer_of(net), accepted=req)
    assert (await fac.verify(p, req)).invalid_reason == "invalid_exact_evm_payload_recipient_mismatch"
    ok = await sign(dataclasses.replace(req, pay_to=req.pay_to.lower()), payer_of(net), accepted=req)
    assert (await fac.verify(ok, req)).is_valid


async def test_value_mismatch(net, fac):
    """Checklist 49: value ≠ amount (v2 exact equality, also when larger) → value_mismatch."""
    req = offer(net, 10_000)
    for signed_amount in (9_999, 10_001):
        p = await sign(dataclasses.replace(req, amount=signed_amount), payer_of(net), accepted=req)
        v = await fac.verify(p, req)
        assert v.invalid_reason == "invalid_exact_evm_payload_authorization_value_mismatch"


async def test_expired_valid_before(net, fac):
    """Checklist 50: validBefore < now + 6 → valid_before (signed 60 s ago with a 60 s window)."""
    req = offer(net)
    p = await sign(req, payer_of(net), clock=lambda: time.time() - 56)
    assert (await fac.verify(p, req)).invalid_reason == "invalid_exact_evm_payload_authorization_valid_before"


async def test_not_yet_valid_after(net, fac):
    """Checklist 51: validAfter > now → valid_after (a clock 15 minutes fast)."""
    req = offer(net)
    p = await sign(req, payer_of(net), clock=lambda: time.time() + 900)
    assert (await fac.verify(p, req)).invalid_reason == "invalid_exact_evm_payload_authorization_valid_after"


async def test_signature_by_another_key(net, fac):
    """Checklist 52: an EOA signature that does not recover to `from` → invalid signature."""
    req = offer(net)
    p = await sign(req, payer_of(net))
    inner = ExactEvmPayload.from_wire(p.payload)
    forged = await sign(req, LocalSigner.generate())
    sig = ExactEvmPayload.from_wire(forged.payload).signature
    bad = dataclasses.replace(p, payload=ExactEvmPayload(sig, inner.authorization).to_wire())
    assert (await fac.verify(bad, req)).invalid_reason == "invalid_exact_evm_payload_signature"


async def test_v_zero_one_is_normalized(net, fac):
    """Checklist 52: v ∈ {0,1} is accepted like 27/28, and settlement uses the (v,r,s) overload."""
    req = offer(net, 5)
    p = await sign(req, payer_of(net))
    inner = ExactEvmPayload.from_wire(p.payload)
    low_v = inner.signature[:64] + bytes([inner.signature[64] - 27])
    p2 = dataclasses.replace(p, payload=ExactEvmPayload(low_v, inner.authorization).to_wire())
    assert (await fac.verify(p2, req)).is_valid
    assert (await fac.settle(p2, req)).success


async def test_asset_mismatch(net, fac):
    """A payment signed for another token never verifies for this offer."""
    req = offer(net)
    other = dataclasses.replace(req, asset="0x" + "12" * 20)
    p = await sign(other, payer_of(net))
    v = await fac.verify(p, req)
    assert not v.is_valid and v.invalid_reason == "invalid_exact_evm_payload_signature"


async def test_insufficient_balance(net, fac):
    """A payer without enough tokens → invalid_exact_evm_insufficient_balance (before any broadcast)."""
    poor = LocalSigner.generate()
    req = offer(net, 50)
    p = await sign(req, poor)
    v = await fac.verify(p, req)
    assert v.invalid_reason == "invalid_exact_evm_insufficient_balance"
    s = await fac.settle(p, req)
    assert not s.success and s.transaction == ""


async def test_wrong_domain_name_is_diagnosed(net, fac):
    """Checklist 54: a wrong EIP-712 name in `extra` fails simulation and is reported as a name mismatch."""
    req = offer(net, extra={"name": "USDC", "version": "2"})
    p = await sign(req, payer_of(net))
    assert (await fac.verify(p, req)).invalid_reason == "invalid_exact_evm_token_name_mismatch"
    req2 = offer(net, extra={"name": "USD Coin", "version": "1"})
    p2 = await sign(req2, payer_of(net))
    assert (await fac.verify(p2, req2)).invalid_reason == "invalid_exact_evm_token_version_mismatch"


async def test_malformed_inner_payload(net, fac):
    """A payload that is not an EIP-3009 authorization → invalid_payload, never an exception."""
    req = offer(net)
    p = PaymentPayload(x402_version=2, accepted=req, payload={"signature": "0x1234"})
    assert (await fac.verify(p, req)).invalid_reason == "invalid_payload"
    assert (await fac.settle(p, req)).error_reason == "invalid_payload"


async def test_verify_never_broadcasts(net, fac):
    """Checklist 43: /verify sends no transaction."""
    req = offer(net)
    p = await sign(req, payer_of(net))
    n = await net.chain.get_transaction_count(net.facilitator.address, "pending")
    assert (await fac.verify(p, req)).is_valid
    assert await net.chain.get_transaction_count(net.facilitator.address, "pending") == n


class WalletSigner:
    """Signs for a TestSmartWallet (EIP-1271) with its owner's key."""

    def __init__(self, wallet: str, owner: LocalSigner) -> None:
        self.address, self.owner = wallet, owner

    async def sign_digest(self, digest: bytes) -> bytes:
        return await self.owner.sign_digest(digest)


async def _deploy_wallet(net, owner: LocalSigner) -> str:
    art = load_artifact("TestSmartWallet")
    from eth_abi import encode

    wallet = await TxSender(net.chain, net.deployer.private_key).deploy(art.bytecode, encode(["address"], [owner.address]))
    await net.mint(wallet, 1_000_000)
    return wallet


async def test_eip1271_contract_wallet(net, fac):
    """Checklist 52/56: a deployed contract wallet's signature is checked with isValidSignature and settles
    through the bytes overload; a signature by anyone but the owner is refused."""
    owner = LocalSigner.generate()
    wallet = await _deploy_wallet(net, owner)
    req = offer(net, 2_000)
    p = await sign(req, WalletSigner(wallet, owner))
    assert (await fac.verify(p, req)).is_valid
    s = await fac.settle(p, req)
    assert s.success and s.payer.lower() == wallet.lower()
    assert await net.token_balance(wallet) == 1_000_000 - 2_000
    bad = await sign(req, WalletSigner(wallet, LocalSigner.generate()))
    assert (await fac.verify(bad, req)).invalid_reason == "invalid_exact_evm_payload_signature"


async def test_undeployed_smart_wallet(net, fac):
    """Checklist 53: an ERC-6492-wrapped signature from an address without code → undeployed_smart_wallet."""
    from eth_abi import encode

    req = offer(net)
    counterfactual = LocalSigner.generate()
    p = await sign(req, counterfactual)
    inner = ExactEvmPayload.from_wire(p.payload)
    wrapped = encode(["address", "bytes", "bytes"], ["0x" + "ab" * 20, b"\x01\x02", inner.signature + b"\x00"]) + token.ERC6492_MAGIC
    p2 = dataclasses.replace(p, payload=ExactEvmPayload(wrapped, inner.authorization).to_wire())
    assert (await fac.verify(p2, req)).invalid_reason == "invalid_exact_evm_payload_undeployed_smart_wallet"


async def test_offchain_checks_are_pure_and_ordered():
    """The pure part runs without a chain and reports the first failing check in digest order."""
    from paywire.evm.assets import Asset
    from paywire.schemes.evm_exact.server import exact_evm_offer

    asset = Asset("eip155:31337", "0x" + "11" * 20, "USD Coin", "2")
    req = exact_evm_offer(asset, "0x" + "22" * 20, amount=100)
    key = LocalSigner.generate()
    now = int(time.time())
    dom = domain_separator("USD Coin", "2", 31337, asset.address)
    nonce = keccak256(b"n")
    def payload(to: str, value: int, after: int, before: int) -> PaymentPayload:
        d = transfer_authorization_digest(dom, address_bytes(key.address), address_bytes(to), value, after, before, nonce)
        sig = key.sign_digest_sync(d)
        inner = {"signature": "0x" + sig.hex(), "authorization": {
            "from": key.address, "to": to, "value": str(value), "validAfter": str(after),
            "validBefore": str(before), "nonce": "0x" + nonce.hex()}}
        return PaymentPayload(x402_version=2, accepted=req, payload=inner)
    good = check_offchain(payload(req.pay_to, 100, now - 10, now + 60), req, now)
    assert getattr(good, "signer_ok", False)
    # recipient is checked before value, value before time
    bad = check_offchain(payload("0x" + "33" * 20, 99, now + 10, now), req, now)
    assert bad.invalid_reason == "invalid_exact_evm_payload_recipient_mismatch"
    bad = check_offchain(payload(req.pay_to, 99, now + 10, now), req, now)
    assert bad.invalid_reason == "invalid_exact_evm_payload_authorization_value_mismatch"
    bad = check_offchain(payload(req.pay_to, 100, now - 10, now + 5), req, now)
    assert bad.invalid_reason == "invalid_exact_evm_payload_authorization_valid_before"
