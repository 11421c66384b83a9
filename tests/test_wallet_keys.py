"""The buyer's wallet: keys from the environment, standard encrypted keystore files, signer callables
(KMS/hardware style), and balance / authorization lookups through the chain layer."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import pytest_asyncio
from eth_account import Account

from paywire.chain import JsonRpcServer
from paywire.client import receipt_of, x402_client
from paywire.errors import ConfigError
from paywire.evm.crypto import sign_digest
from paywire.evm.signer import LocalSigner
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact import ExactEvmClient
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.wallet import Wallet, decrypt_keystore, encrypt_key, keystore_address, parse_rpc, write_keystore
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, offer, paid_app

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ADDRESS = LocalSigner(KEY).address


def test_keystore_round_trip_is_standard(tmp_path) -> None:
    """A keystore we write is standard v3 JSON: eth-account decrypts it; we decrypt eth-account's."""
    path = write_keystore(tmp_path / "k.json", KEY, "pw", kdf="pbkdf2", iterations=1000)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = json.loads(path.read_text())
    assert data["version"] == 3 and Account.decrypt(data, "pw") == KEY
    assert keystore_address(path) == ADDRESS
    theirs = Account.encrypt(KEY, "other", kdf="scrypt", iterations=2**10)
    assert decrypt_keystore(theirs, "other") == KEY
    assert Wallet.from_keystore(path, "pw").address == ADDRESS
    with pytest.raises(ConfigError, match="cannot decrypt"):
        Wallet.from_keystore(path, "wrong")
    with pytest.raises(ConfigError, match="already exists"):
        write_keystore(path, KEY, "pw")
    assert encrypt_key(KEY, "pw", kdf="scrypt", iterations=2**10)["crypto"]["kdf"] == "scrypt"


def test_from_env(tmp_path) -> None:
    assert Wallet.from_env({"PAYWIRE_WALLET_KEY": "0x" + KEY.hex()}).address == ADDRESS
    path = write_keystore(tmp_path / "k.json", KEY, "secret", kdf="pbkdf2", iterations=1000)
    env = {"PAYWIRE_KEYSTORE": str(path), "PAYWIRE_KEYSTORE_PASSWORD": "secret"}
    assert Wallet.from_env(env).address == ADDRESS
    with pytest.raises(ConfigError, match="PAYWIRE_KEYSTORE_PASSWORD"):
        Wallet.from_env({"PAYWIRE_KEYSTORE": str(path)}, prompt=False)
    with pytest.raises(ConfigError, match="paywire wallet new"):
        Wallet.from_env({})
    with pytest.raises(ConfigError, match="32-byte"):
        Wallet.from_env({"PAYWIRE_WALLET_KEY": "0x1234"})
    w = Wallet.from_env({"PAYWIRE_WALLET_KEY": KEY.hex(), "PAYWIRE_RPC": "eip155:1=http://a,eip155:2=http://b"})
    assert w._rpc_map == {"eip155:1": "http://a", "eip155:2": "http://b"}
    assert parse_rpc("http://node:8545") == "http://node:8545"


def test_signer_callable_sync_and_async() -> None:
    async def main() -> None:
        digest = os.urandom(32)
        sync_w = Wallet.from_signer(lambda d: sign_digest(KEY, d), ADDRESS.lower())

        async def remote(d: bytes) -> bytes:
            await asyncio.sleep(0)
            return sign_digest(KEY, d)

        async_w = Wallet.from_signer(remote, ADDRESS)
        assert sync_w.address == async_w.address == ADDRESS
        assert await sync_w.signer.sign_digest(digest) == await async_w.signer.sign_digest(digest)
        bad = Wallet.from_signer(lambda d: "not bytes", ADDRESS)  # type: ignore[arg-type, return-value]
        with pytest.raises(ValueError, match="bytes"):
            await bad.signer.sign_digest(digest)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------ on chain


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest.mark.asyncio(loop_scope="module")
async def test_balances_through_the_chain_layer(net) -> None:
    """Balances via a given Chain and via an RPC URL (matched by chain id); unknown networks give None."""
    server = JsonRpcServer(net.chain.transport)
    url = await asyncio.to_thread(server.start)
    try:
        given = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
        by_url = Wallet.from_key(net.info.payer_key, rpc=url)
        expected = await balance(net, net.payer.address)
        assert await given.balance(net.info.network, net.info.token) == expected
        assert await by_url.balance(net.info.network, net.info.token) == expected
        assert (await by_url.native_balance(net.info.network) or 0) > 0
        assert await by_url.balance("eip155:8453", net.info.token) is None  # the node is another chain
        assert await Wallet.from_key(KEY).balance(net.info.network, net.info.token) is None
        await by_url.aclose()
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.asyncio(loop_scope="module")
async def test_authorization_state(net) -> None:
    """An expired, unused authorization is reported as 'never settles' (False); a settled one as True."""
    wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
    req = offer(net, 1)
    old = ExactEvmClient(wallet.signer, clock=lambda: time.time() - 4000)
    expired = ExactEvmPayload.from_wire(await old.create_payload(req)).authorization
    nonce = "0x" + expired.nonce.hex()
    assert await wallet.authorization_used(net.info.network, net.info.token, nonce, expired.valid_before) is False
    assert await wallet.authorization_used(net.info.network, net.info.token, nonce) is None
    fresh = await ExactEvmClient(wallet.signer).create_payload(req)
    from paywire.x402.models import PaymentPayload

    fac = facilitator_for(net)
    assert (await fac.settle(PaymentPayload(accepted=req, payload=fresh), req)).success
    used_nonce = fresh["authorization"]["nonce"]
    assert await wallet.authorization_used(net.info.network, net.info.token, used_nonce) is True


@pytest.mark.asyncio(loop_scope="module")
async def test_kms_style_signer_pays_a_real_server(net, tmp_path) -> None:
    """A wallet whose signer is just a callable (as a KMS or hardware signer would be) pays end to end."""
    calls = []

    def kms(digest: bytes) -> bytes:
        calls.append(digest)
        return sign_digest(bytes.fromhex(net.info.payer_key[2:]), digest)

    wallet = Wallet.from_signer(kms, net.payer.address, chains={net.info.network: net.chain})
    routes = [PaidRoute("/kms", (offer(net, CENT),))]
    before = await balance(net, net.payee.address)
    async with serve_asgi(paid_app(routes, Facilitator([facilitator_for(net)]))) as url, \
            x402_client(wallet, store=f"sqlite:///{tmp_path / 'b.db'}") as client:
        r = await client.get(url + "/kms")
    assert r.status_code == 200 and receipt_of(r).outcome == "paid" and len(calls) == 1
    assert await balance(net, net.payee.address) == before + CENT
