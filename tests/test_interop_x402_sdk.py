"""exact/EVM (EIP-3009) against the official x402 Python SDK (``x402==2.25.0``), both ways, on real chains.

* SDK client → paywire: a ``PAYMENT-SIGNATURE`` (v2) / ``X-PAYMENT`` (v1) header built by the SDK's own
  client decodes with our codec, verifies in our facilitator and settles on our devnet.
* paywire client → SDK: our signed payload passes the SDK's EIP-3009 signature check (pure: digest +
  ``verify_eoa_signature`` / ``classify_eip3009_signature``) and its whole in-process facilitator
  (``x402FacilitatorSync`` + ``FacilitatorWeb3Signer`` on the chain's JSON-RPC URL), which then settles it.
* A payload whose value was changed after signing is refused by both sides with the same reason.

Every test runs twice: on the embedded py-evm chain (served to web3.py by ``JsonRpcServer``) and on anvil.
No mocks: real signatures, real transactions, balances read back from the token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account
from x402 import PaymentRequired as SdkPaymentRequired
from x402 import PaymentRequiredV1 as SdkPaymentRequiredV1
from x402 import PaymentRequirements as SdkPaymentRequirements
from x402 import PaymentRequirementsV1 as SdkPaymentRequirementsV1
from x402 import x402ClientSync, x402FacilitatorSync
from x402.http import x402HTTPClientSync
from x402.http.utils import decode_payment_signature_header
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmScheme, ExactEvmSchemeConfig
from x402.mechanisms.evm.exact.eip3009_utils import classify_eip3009_signature
from x402.mechanisms.evm.exact.v1 import ExactEvmSchemeV1Client
from x402.mechanisms.evm.signers import EthAccountSigner, FacilitatorWeb3Signer
from x402.mechanisms.evm.types import ExactEIP3009Payload
from x402.mechanisms.evm.utils import get_evm_chain_id, hex_to_bytes
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS
from x402.mechanisms.evm.verify import verify_eoa_signature

from paywire.chain import JsonRpcServer
from paywire.chain.devkeys import dev_keys
from paywire.devnet import Devnet
from paywire.evm.crypto import address_bytes
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact.facilitator import CheckedAuthorization, check_offchain
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.x402.codec import decode_payment_signature, encode_payment_payload
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    requirements_v2_to_v1,
)
from tests.helpers import close_devnet, facilitator_for, new_devnet, offer, payer_of, sign

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]

SIG_INVALID = "invalid_exact_evm_payload_signature"
VALUE_MISMATCH = "invalid_exact_evm_payload_authorization_value_mismatch"
# The SDK facilitator's gas key: a funded dev account that paywire's devnet does not use (keys 0-3 are
# deployer/facilitator/payer/payee), so the two facilitators never race for one account's nonces.
SDK_FACILITATOR_KEY = "0x" + dev_keys(6)[5].hex()

ANVIL_UNAVAILABLE = shutil.which("npm") is None  # tests.helpers.new_devnet("anvil") skips then too


# ------------------------------------------------------------------------------------------------
# one devnet per chain kind (module scope), each with our facilitator and the SDK's
# ------------------------------------------------------------------------------------------------


@dataclass
class Env:
    kind: str
    net: Devnet
    rpc_url: str  # what web3.py (inside the SDK facilitator) talks to
    ours: Facilitator
    sdk: x402FacilitatorSync

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))


def sdk_facilitator(net: Devnet, rpc_url: str) -> x402FacilitatorSync:
    """The SDK's in-process facilitator with its stock defaults (verify simulates, settle does not)."""
    signer = FacilitatorWeb3Signer(private_key=SDK_FACILITATOR_KEY, rpc_url=rpc_url, confirmation_timeout_seconds=30)
    fac = x402FacilitatorSync()
    fac.register([net.info.network], ExactEvmFacilitatorScheme(signer, ExactEvmSchemeConfig()))
    return fac


@pytest_asyncio.fixture(
    loop_scope="module", scope="module",
    params=["embedded", pytest.param("anvil", marks=[
        pytest.mark.anvil,
        pytest.mark.skipif(ANVIL_UNAVAILABLE, reason="npm is not on PATH, so anvil cannot be installed"),
    ])],
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    net = await new_devnet(request.param)
    server: JsonRpcServer | None = None
    try:
        if net.info.rpc_url is None:  # embedded: serve it as standard JSON-RPC for web3.py
            server = JsonRpcServer(net.chain.transport)  # type: ignore[attr-defined]
            url = await asyncio.to_thread(server.start)
        else:
            url = net.info.rpc_url
        yield Env(request.param, net, url, Facilitator([facilitator_for(net)]), sdk_facilitator(net, url))
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await close_devnet(net)


# ------------------------------------------------------------------------------------------------
# SDK client side
# ------------------------------------------------------------------------------------------------


def sdk_account(net: Devnet) -> Any:
    return Account.from_key(net.info.payer_key)


def sdk_sign_v2(net: Devnet, req: PaymentRequirements) -> str:
    """The SDK v2 client pays our offer; returns the exact ``PAYMENT-SIGNATURE`` value it would send."""
    client = x402ClientSync()
    client.register(net.info.network, ExactEvmScheme(EthAccountSigner(sdk_account(net))))
    # our token is not one of the SDK's DEFAULT_ASSETS, so its spend controls must allow it
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": req.asset}]})
    sdk_req = SdkPaymentRequirements.model_validate(req.to_wire())
    payload = client.create_payment_payload(SdkPaymentRequired(accepts=[sdk_req]))
    headers = x402HTTPClientSync(client).encode_payment_signature_header(payload)
    assert list(headers) == ["PAYMENT-SIGNATURE"]
    return headers["PAYMENT-SIGNATURE"]


@pytest.fixture
def sdk_v1_network(env: Env) -> Iterator[str]:
    """Teach the SDK a v1 name for our chain (its v1 names come from a hard-coded dict).

    paywire's v1 models take a known legacy name or a CAIP-2 id, and no legacy name means 31337, so the name
    both sides resolve to our chain is the CAIP-2 string itself. The SDK dict is restored afterwards.
    """
    name = env.net.info.network
    missing = object()
    saved = V1_NETWORK_CHAIN_IDS.get(name, missing)
    V1_NETWORK_CHAIN_IDS[name] = env.net.info.chain_id
    try:
        yield name
    finally:
        if saved is missing:
            V1_NETWORK_CHAIN_IDS.pop(name, None)
        else:
            V1_NETWORK_CHAIN_IDS[name] = saved  # type: ignore[assignment]


def sdk_sign_v1(net: Devnet, req_v1: PaymentRequirementsV1) -> str:
    """The SDK v1 client pays a v1 offer; returns its ``X-PAYMENT`` value."""
    client = x402ClientSync()
    client.register_v1(req_v1.network, ExactEvmSchemeV1Client(sdk_account(net)))
    client.set_spend_controls({"allowed_assets": [{"network": req_v1.network, "asset": req_v1.asset}]})
    sdk_req = SdkPaymentRequirementsV1.model_validate(req_v1.to_wire())
    payload = client.create_payment_payload(SdkPaymentRequiredV1(accepts=[sdk_req]))
    headers = x402HTTPClientSync(client).encode_payment_signature_header(payload)
    assert list(headers) == ["X-PAYMENT"]
    return headers["X-PAYMENT"]


# ------------------------------------------------------------------------------------------------
# SDK facilitator side
# ------------------------------------------------------------------------------------------------


def to_sdk(payload: PaymentPayload) -> Any:
    """Our payload as the SDK's model, through the wire (our encoder, the SDK's decoder)."""
    return decode_payment_signature_header(encode_payment_payload(payload))


class NoCode:
    """``FacilitatorEvmSigner`` stand-in for the pure check: every address is a code-less EOA (no RPC)."""

    def get_code(self, address: str) -> bytes:
        return b""


def sdk_pure_check(payload: PaymentPayload, req: PaymentRequirements) -> tuple[bool, bool, bytes]:
    """The SDK's off-chain EIP-3009 signature check, as its facilitator runs it (minus eth_getCode).

    Returns (``verify_eoa_signature`` on the SDK digest, ``classify_eip3009_signature(...).valid``, digest).
    """
    p = to_sdk(payload)
    evm = ExactEIP3009Payload.from_dict(p.payload)
    chain_id = get_evm_chain_id(req.network)
    name, version = req.extra["name"], req.extra["version"]
    digest = hash_eip3009_authorization(evm.authorization, chain_id, req.asset, name, version)
    assert evm.signature is not None
    sig = hex_to_bytes(evm.signature)
    eoa = verify_eoa_signature(digest, sig, evm.authorization.from_address)
    classified = classify_eip3009_signature(
        NoCode(), evm.authorization, sig, chain_id, req.asset, name, version  # type: ignore[arg-type]
    )
    return eoa, classified.valid, digest


def our_digest(payload: PaymentPayload, req: PaymentRequirements) -> bytes:
    a = ExactEvmPayload.from_wire(payload.payload).authorization
    return transfer_authorization_digest(
        domain_separator(req.extra["name"], req.extra["version"], int(req.network.split(":")[1]), req.asset),
        address_bytes(a.from_), address_bytes(a.to), a.value, a.valid_after, a.valid_before, a.nonce,
    )


async def sdk_verify(env: Env, payload: PaymentPayload, req: PaymentRequirements) -> Any:
    sdk_req = SdkPaymentRequirements.model_validate(req.to_wire())
    return await asyncio.to_thread(env.sdk.verify, to_sdk(payload), sdk_req)


async def sdk_settle(env: Env, payload: PaymentPayload, req: PaymentRequirements) -> Any:
    sdk_req = SdkPaymentRequirements.model_validate(req.to_wire())
    return await asyncio.to_thread(env.sdk.settle, to_sdk(payload), sdk_req)


def with_value(payload: PaymentPayload, value: int) -> PaymentPayload:
    """``payload`` with ``authorization.value`` replaced after signing (signature untouched)."""
    inner = ExactEvmPayload.from_wire(payload.payload)
    forged = dataclasses.replace(inner, authorization=dataclasses.replace(inner.authorization, value=value))
    return dataclasses.replace(payload, payload=forged.to_wire())


# ------------------------------------------------------------------------------------------------
# SDK client → paywire facilitator
# ------------------------------------------------------------------------------------------------


async def test_sdk_v2_payment_signature_verifies_and_settles_with_us(env: Env) -> None:
    """Checklist 27/29/31/32 (SDK client), 52/54/56 (our facilitator): the SDK's ``PAYMENT-SIGNATURE`` for
    our offer decodes with our codec, echoes the offer verbatim, verifies and settles; balances move."""
    net = env.net
    req = offer(net, 23_456)
    header = await asyncio.to_thread(sdk_sign_v2, net, req)

    ours = decode_payment_signature(header)
    assert isinstance(ours, PaymentPayload)
    assert ours.accepted == req and ours.accepted.to_wire() == req.to_wire()
    auth = ExactEvmPayload.from_wire(ours.payload).authorization
    assert auth.from_ == net.payer.address and auth.to == req.pay_to and auth.value == 23_456
    checked = check_offchain(ours, req, int(time.time()))
    assert isinstance(checked, CheckedAuthorization) and checked.signer_ok

    before = await env.balances()
    v = await env.ours.verify(ours, req)
    assert v.is_valid, v
    assert v.payer == net.payer.address
    s = await env.ours.settle(ours, req)
    assert s.success, s
    assert s.network == net.info.network and s.payer == net.payer.address
    assert s.amount == 23_456 and s.to_wire()["amount"] == "23456"
    receipt = await net.chain.get_transaction_receipt(s.transaction)
    assert receipt is not None and receipt.status == 1
    after = await env.balances()
    assert after == (before[0] - 23_456, before[1] + 23_456)


async def test_sdk_v1_x_payment_verifies_and_settles_with_us(env: Env, sdk_v1_network: str) -> None:
    """Checklist 93/94 (v1 wire), 31/32, 52/56: the SDK v1 client's ``X-PAYMENT`` for our v1 offer decodes
    as a v1 payload; our facilitator (v1 models) verifies and settles it; balances move."""
    net = env.net
    req_v1 = requirements_v2_to_v1(offer(net, 3_210), ResourceInfo("http://127.0.0.1/paid", "paid", "text/plain"))
    assert req_v1.network == sdk_v1_network
    header = await asyncio.to_thread(sdk_sign_v1, net, req_v1)

    ours = decode_payment_signature(header)
    assert isinstance(ours, PaymentPayloadV1)
    assert (ours.scheme, ours.network, ours.x402_version) == ("exact", sdk_v1_network, 1)
    auth = ExactEvmPayload.from_wire(ours.payload).authorization
    assert auth.value == 3_210 and auth.to == req_v1.pay_to

    before = await env.balances()
    v = await env.ours.verify(ours, req_v1)
    assert v.is_valid, v
    assert v.payer == net.payer.address
    s = await env.ours.settle(ours, req_v1)
    assert s.success, s
    assert s.payer == net.payer.address
    after = await env.balances()
    assert after == (before[0] - 3_210, before[1] + 3_210)


# ------------------------------------------------------------------------------------------------
# paywire client → SDK facilitator
# ------------------------------------------------------------------------------------------------


async def test_our_signature_passes_sdk_pure_eip3009_check(env: Env) -> None:
    """Checklist 32/52: our EIP-712 digest equals the SDK's, and the SDK's ECDSA check (``verify_eoa_signature``
    and ``classify_eip3009_signature`` with a code-less stub) accepts our signature, also with v ∈ {0, 1}."""
    req = offer(env.net, 4_321)
    p = await sign(req, payer_of(env.net))
    eoa, classified, digest = sdk_pure_check(p, req)
    assert eoa and classified
    assert digest == our_digest(p, req)

    inner = ExactEvmPayload.from_wire(p.payload)
    low_v = dataclasses.replace(p, payload=dataclasses.replace(
        inner, signature=inner.signature[:64] + bytes([inner.signature[64] - 27])).to_wire())
    assert sdk_pure_check(low_v, req)[:2] == (True, True)


async def test_our_payment_verifies_and_settles_through_sdk_facilitator(env: Env) -> None:
    """Checklist 31/32 (our client), 52/54/55/56 (SDK facilitator on our token): the SDK facilitator verifies
    our payload over JSON-RPC (getCode + simulation), settles it on our token, and the nonce is then spent
    for our facilitator too."""
    net = env.net
    req = offer(net, 7_777)
    p = await sign(req, payer_of(net))
    before = await env.balances()

    v = await sdk_verify(env, p, req)
    assert v.is_valid, v
    assert v.payer.lower() == net.payer.address.lower()
    assert await env.balances() == before  # verify never broadcasts (checklist 43)

    s = await sdk_settle(env, p, req)
    assert s.success, s
    assert s.network == net.info.network and s.transaction.startswith("0x")
    receipt = await net.chain.get_transaction_receipt(s.transaction)
    assert receipt is not None and receipt.status == 1
    after = await env.balances()
    assert after == (before[0] - 7_777, before[1] + 7_777)

    replay = await env.ours.verify(p, req)
    assert replay.invalid_reason == "invalid_exact_evm_nonce_already_used"
    sdk_replay = await sdk_verify(env, p, req)
    assert sdk_replay.invalid_reason == "invalid_exact_evm_nonce_already_used"


# ------------------------------------------------------------------------------------------------
# tampering: both sides refuse, with the same reason
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["paywire", "sdk"])
async def test_value_changed_after_signing_is_refused_by_both(env: Env, signer: str) -> None:
    """Checklist 49/52: bump ``authorization.value`` after signing.

    Against an offer for the new value the field checks pass and only the signature can catch it: both
    sides say ``invalid_exact_evm_payload_signature`` (ours off-chain and on-chain, the SDK's pure check and
    its facilitator). Against the original offer both say ``…_authorization_value_mismatch``. Nothing moves.
    """
    net = env.net
    req = offer(net, 5_000)
    if signer == "sdk":
        decoded = decode_payment_signature(await asyncio.to_thread(sdk_sign_v2, net, req))
        assert isinstance(decoded, PaymentPayload)
        p = decoded
    else:
        p = await sign(req, payer_of(net))
    assert (await env.ours.verify(p, req)).is_valid and (await sdk_verify(env, p, req)).is_valid

    bumped_req = dataclasses.replace(req, amount=5_001)
    forged = dataclasses.replace(with_value(p, 5_001), accepted=bumped_req)
    before = await env.balances()

    checked = check_offchain(forged, bumped_req, int(time.time()))
    assert isinstance(checked, CheckedAuthorization) and not checked.signer_ok
    assert sdk_pure_check(forged, bumped_req)[:2] == (False, False)
    ours_v, sdk_v = await env.ours.verify(forged, bumped_req), await sdk_verify(env, forged, bumped_req)
    assert (ours_v.is_valid, sdk_v.is_valid) == (False, False)
    assert ours_v.invalid_reason == sdk_v.invalid_reason == SIG_INVALID

    ours_s = await env.ours.settle(forged, bumped_req)
    assert not ours_s.success and ours_s.error_reason == SIG_INVALID and ours_s.transaction == ""
    sdk_s = await sdk_settle(env, forged, bumped_req)
    assert not sdk_s.success and sdk_s.error_reason == SIG_INVALID and sdk_s.transaction == ""

    mismatch = with_value(p, 5_001)
    ours_m, sdk_m = await env.ours.verify(mismatch, req), await sdk_verify(env, mismatch, req)
    assert ours_m.invalid_reason == sdk_m.invalid_reason == VALUE_MISMATCH
    assert await env.balances() == before
