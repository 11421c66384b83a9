"""On-chain tests of the committed contract artifacts (PaywireToken, TestSmartWallet).

Everything runs against a real EVM (py-evm through eth-tester); signatures are made with eth_account's
EIP-712 support, independently of the contract code.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import RPCEndpoint

from paywire.evm.artifacts import artifact_names, load_artifact, source_path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_UINT256 = 2**256 - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ERC1271_MAGIC = bytes.fromhex("1626ba7e")

TWA = "transferWithAuthorization"
RWA = "receiveWithAuthorization"
TWA_VRS = f"{TWA}(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
TWA_BYTES = f"{TWA}(address,address,uint256,uint256,uint256,bytes32,bytes)"
RWA_VRS = f"{RWA}(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
RWA_BYTES = f"{RWA}(address,address,uint256,uint256,uint256,bytes32,bytes)"
CANCEL_VRS = "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)"
CANCEL_BYTES = "cancelAuthorization(address,bytes32,bytes)"

AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
CANCEL_FIELDS = [
    {"name": "authorizer", "type": "address"},
    {"name": "nonce", "type": "bytes32"},
]
EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]

# Fixed keys so failures are reproducible; none of these accounts needs ether.
PAYER = Account.from_key(b"\x11" * 32)
MALLORY = Account.from_key(b"\x22" * 32)
WALLET_OWNER = Account.from_key(b"\x33" * 32)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def w3() -> Web3:
    return Web3(EthereumTesterProvider())


@pytest.fixture
def accounts(w3: Web3) -> list[str]:
    return list(w3.eth.accounts)


def _deploy(w3: Web3, name: str, *args: Any) -> Contract:
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(*args).transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
    assert isinstance(contract, Contract)
    return contract


@pytest.fixture
def token(w3: Web3) -> Contract:
    """A fresh PaywireToken per test, deployed by accounts[0] (its owner), with 100 USDC for PAYER."""
    contract = _deploy(w3, "PaywireToken", "USD Coin", "2", "USDC")
    _send(w3, contract.functions.mint(PAYER.address, 100_000_000))
    return contract


@pytest.fixture
def wallet(w3: Web3, token: Contract) -> Contract:
    """A TestSmartWallet owned by WALLET_OWNER, holding 50 USDC."""
    contract = _deploy(w3, "TestSmartWallet", WALLET_OWNER.address)
    _send(w3, token.functions.mint(contract.address, 50_000_000))
    return contract


# --------------------------------------------------------------------------- helpers


def _send(w3: Web3, fn: Any, sender: str | None = None) -> Any:
    tx_hash = fn.transact({"from": sender or w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def _now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def _time_travel(w3: Web3, timestamp: int) -> None:
    """Mine a block at `timestamp`; later transactions run at or after it."""
    provider = w3.provider
    assert isinstance(provider, EthereumTesterProvider) and provider.ethereum_tester is not None
    provider.ethereum_tester.time_travel(timestamp)


def _domain(w3: Web3, token: Contract) -> dict[str, Any]:
    return {
        "name": token.functions.name().call(),
        "version": token.functions.version().call(),
        "chainId": w3.eth.chain_id,
        "verifyingContract": token.address,
    }


def _sign_authorization(
    w3: Web3,
    token: Contract,
    signer: LocalAccount,
    *,
    from_: str,
    to: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
    primary_type: str = "TransferWithAuthorization",
) -> Any:
    message = {
        "from": from_,
        "to": to,
        "value": value,
        "validAfter": valid_after,
        "validBefore": valid_before,
        "nonce": nonce,
    }
    return signer.sign_typed_data(_domain(w3, token), {primary_type: AUTH_FIELDS}, message)


def _authorization(
    w3: Web3,
    token: Contract,
    signer: LocalAccount,
    to: str,
    value: int,
    *,
    from_: str | None = None,
    valid_after: int | None = None,
    valid_before: int | None = None,
    nonce: bytes | None = None,
    primary_type: str = "TransferWithAuthorization",
) -> tuple[tuple[Any, ...], Any]:
    """Signed authorization: returns (the six EIP-3009 arguments, the signed message)."""
    now = _now(w3)
    args = (
        from_ or signer.address,
        to,
        value,
        now - 60 if valid_after is None else valid_after,
        now + 3600 if valid_before is None else valid_before,
        os.urandom(32) if nonce is None else nonce,
    )
    signed = _sign_authorization(
        w3,
        token,
        signer,
        from_=args[0],
        to=args[1],
        value=args[2],
        valid_after=args[3],
        valid_before=args[4],
        nonce=args[5],
        primary_type=primary_type,
    )
    return args, signed


def _vrs(signed: Any) -> tuple[int, bytes, bytes]:
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


REVERTED = (ContractLogicError, TransactionFailed)


def _revert_message(exc: BaseException) -> str | bytes:
    """The revert reason string, or the raw revert data for a custom error."""
    text = str(exc.args[0]) if exc.args else str(exc)
    text = text.removeprefix("execution reverted: ")
    if text.startswith(("b'", 'b"')):
        data = ast.literal_eval(text)
        assert isinstance(data, bytes)
        return data
    return text


def _reverts(fn: Any, reason: str, sender: str) -> None:
    with pytest.raises(REVERTED) as info:
        fn.transact({"from": sender})
    message = _revert_message(info.value)
    assert isinstance(message, str) and reason in message, str(info.value)


def _reverts_with_error(fn: Any, error_signature: str, sender: str) -> bytes:
    """Asserts a revert with the custom error `error_signature`; returns the ABI-encoded error arguments."""
    with pytest.raises(REVERTED) as info:
        fn.transact({"from": sender})
    data = _revert_message(info.value)
    assert isinstance(data, bytes) and data[:4] == keccak(text=error_signature)[:4], str(info.value)
    return data[4:]


# --------------------------------------------------------------------------- artifacts


def test_artifacts_match_sources_in_repo() -> None:
    names = artifact_names()
    assert {"PaywireToken", "TestSmartWallet"} <= set(names)
    for name in names:
        artifact = load_artifact(name)
        src = source_path(name)
        assert src is not None, f"contracts/src/{name}.sol missing from the checkout"
        assert src == REPO_ROOT / "contracts" / "src" / f"{name}.sol"
        assert artifact.source_relpath == f"contracts/src/{name}.sol"
        assert artifact.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest(), (
            f"{name}.json is stale: rebuild with `node contracts/build.mjs`"
        )
        assert artifact.compiler.startswith("soljson-v0.8.")
        assert artifact.settings["evmVersion"] == "cancun"
        assert artifact.settings["optimizer"] == {"enabled": True, "runs": 200}
        assert artifact.settings["metadata"] == {"bytecodeHash": "none", "appendCBOR": False}
        assert artifact.bytecode and artifact.deployed_bytecode
        assert load_artifact(name) is artifact  # cached


def test_artifact_files_are_canonical_json() -> None:
    directory = REPO_ROOT / "src" / "paywire" / "evm" / "artifacts"
    for path in sorted(directory.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert json.dumps(data, indent=2) + "\n" == text
        assert list(data) == [
            "contractName",
            "abi",
            "bytecode",
            "deployedBytecode",
            "compiler",
            "settings",
            "sourcePath",
            "sourceSha256",
        ]
        assert data["contractName"] == path.stem


def test_compiler_pin_matches_artifacts() -> None:
    package = json.loads((REPO_ROOT / "contracts" / "package.json").read_text())
    pinned = package["dependencies"]["solc"]
    assert pinned[0].isdigit(), "solc must be pinned to an exact version"
    for name in artifact_names():
        assert load_artifact(name).compiler.startswith(f"soljson-v{pinned}+commit.")


def test_load_artifact_rejects_bad_names() -> None:
    with pytest.raises(ValueError):
        load_artifact("../pyproject")
    with pytest.raises(FileNotFoundError):
        load_artifact("NoSuchContract")
    assert source_path("NoSuchContract") is None


@pytest.mark.node
def test_build_check_reproduces_committed_artifacts() -> None:
    """Recompiles with the pinned solc and compares byte-for-byte (needs `npm ci` in contracts/)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm not installed: the pinned solc build cannot run here")
    if not (REPO_ROOT / "contracts" / "node_modules" / "solc").is_dir():
        # install the exact solc from the lockfile, as CI on a fresh clone must
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=REPO_ROOT / "contracts", check=True,
                       capture_output=True, timeout=600)
    result = subprocess.run(
        [node, str(REPO_ROOT / "contracts" / "build.mjs"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- ERC-20 basics


def test_metadata_owner_and_mint(w3: Web3, token: Contract, accounts: list[str]) -> None:
    assert token.functions.name().call() == "USD Coin"
    assert token.functions.symbol().call() == "USDC"
    assert token.functions.version().call() == "2"
    assert token.functions.decimals().call() == 6
    assert token.functions.owner().call() == accounts[0]
    assert token.functions.totalSupply().call() == 100_000_000
    assert token.functions.balanceOf(PAYER.address).call() == 100_000_000

    receipt = _send(w3, token.functions.mint(accounts[1], 5))
    (event,) = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["from"] == "0x" + "00" * 20
    assert event["args"]["to"] == accounts[1]
    assert event["args"]["value"] == 5
    assert token.functions.totalSupply().call() == 100_000_005

    args = _reverts_with_error(token.functions.mint(accounts[1], 1), "NotOwner(address)", accounts[1])
    assert args == abi_encode(["address"], [accounts[1]])

    _send(w3, token.functions.transferOwnership(accounts[1]))
    assert token.functions.owner().call() == accounts[1]
    _send(w3, token.functions.mint(accounts[2], 7), sender=accounts[1])
    assert token.functions.balanceOf(accounts[2]).call() == 7
    _reverts_with_error(token.functions.mint(accounts[2], 1), "NotOwner(address)", accounts[0])
    _reverts_with_error(token.functions.transferOwnership(accounts[0]), "NotOwner(address)", accounts[0])
    _reverts_with_error(token.functions.transferOwnership("0x" + "00" * 20), "ZeroAddress()", accounts[1])


def test_transfer_approve_transfer_from(w3: Web3, token: Contract, accounts: list[str]) -> None:
    a, b, c = accounts[1], accounts[2], accounts[3]
    _send(w3, token.functions.mint(a, 1_000))
    receipt = _send(w3, token.functions.transfer(b, 300), sender=a)
    (event,) = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["from"], event["args"]["to"], event["args"]["value"]) == (a, b, 300)
    assert token.functions.balanceOf(a).call() == 700
    assert token.functions.balanceOf(b).call() == 300
    _reverts(token.functions.transfer(b, 701), "ERC20: transfer amount exceeds balance", a)

    receipt = _send(w3, token.functions.approve(c, 200), sender=a)
    (approval,) = token.events.Approval().process_receipt(receipt, errors=DISCARD)
    assert approval["args"]["value"] == 200
    assert token.functions.allowance(a, c).call() == 200
    _reverts(token.functions.transferFrom(a, c, 201), "ERC20: transfer amount exceeds allowance", c)
    _send(w3, token.functions.transferFrom(a, c, 150), sender=c)
    assert token.functions.allowance(a, c).call() == 50
    assert token.functions.balanceOf(c).call() == 150

    _send(w3, token.functions.approve(c, MAX_UINT256), sender=a)
    _send(w3, token.functions.transferFrom(a, b, 10), sender=c)
    assert token.functions.allowance(a, c).call() == MAX_UINT256


# --------------------------------------------------------------------------- EIP-712 domain


def test_domain_separator_uses_chain_id(w3: Web3, token: Contract) -> None:
    chain_id = w3.eth.chain_id
    raw = w3.provider.make_request(RPCEndpoint("eth_chainId"), [])["result"]
    assert chain_id == (int(raw, 16) if isinstance(raw, str) else int(raw))
    expected = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(
                    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak(text="USD Coin"),
                keccak(text="2"),
                chain_id,
                token.address,
            ],
        )
    )
    assert token.functions.DOMAIN_SEPARATOR().call() == expected

    # The same value eth_account derives from the domain (header of the EIP-712 signable message).
    signable = encode_typed_data(
        full_message={
            "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, "CancelAuthorization": CANCEL_FIELDS},
            "primaryType": "CancelAuthorization",
            "domain": _domain(w3, token),
            "message": {"authorizer": PAYER.address, "nonce": b"\x00" * 32},
        }
    )
    assert signable.header == expected

    fields, name, version, eip5267_chain, verifying, salt, extensions = token.functions.eip712Domain().call()
    assert (fields, name, version, eip5267_chain, verifying) == (
        b"\x0f",
        "USD Coin",
        "2",
        chain_id,
        token.address,
    )
    assert salt == b"\x00" * 32 and extensions == []


def test_typehash_constants(token: Contract) -> None:
    auth = "(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    assert token.functions.TRANSFER_WITH_AUTHORIZATION_TYPEHASH().call() == keccak(
        text="TransferWithAuthorization" + auth
    )
    assert token.functions.RECEIVE_WITH_AUTHORIZATION_TYPEHASH().call() == keccak(
        text="ReceiveWithAuthorization" + auth
    )
    assert token.functions.CANCEL_AUTHORIZATION_TYPEHASH().call() == keccak(
        text="CancelAuthorization(address authorizer,bytes32 nonce)"
    )
    assert token.functions.PERMIT_TYPEHASH().call() == keccak(
        text="Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
    )


# --------------------------------------------------------------------------- EIP-3009


def test_transfer_with_authorization_vrs(w3: Web3, token: Contract, accounts: list[str]) -> None:
    relayer, payee = accounts[1], accounts[2]
    args, signed = _authorization(w3, token, PAYER, payee, 1_500_000)
    nonce = args[5]
    assert token.functions.authorizationState(PAYER.address, nonce).call() is False

    receipt = _send(w3, token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)), sender=relayer)

    assert token.functions.balanceOf(PAYER.address).call() == 98_500_000
    assert token.functions.balanceOf(payee).call() == 1_500_000
    assert token.functions.authorizationState(PAYER.address, nonce).call() is True
    (used,) = token.events.AuthorizationUsed().process_receipt(receipt, errors=DISCARD)
    assert used["args"]["authorizer"] == PAYER.address
    assert used["args"]["nonce"] == nonce
    (transfer,) = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert (transfer["args"]["from"], transfer["args"]["to"]) == (PAYER.address, payee)


def test_transfer_with_authorization_bytes(w3: Web3, token: Contract, accounts: list[str]) -> None:
    relayer, payee = accounts[1], accounts[2]
    args, signed = _authorization(w3, token, PAYER, payee, 2_000_000)
    assert len(signed.signature) == 65

    _send(w3, token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)), sender=relayer)

    assert token.functions.balanceOf(payee).call() == 2_000_000
    assert token.functions.balanceOf(PAYER.address).call() == 98_000_000


def test_bytes_signature_accepts_v_0_or_1(w3: Web3, token: Contract, accounts: list[str]) -> None:
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1)
    sig = bytes(signed.signature)
    assert sig[64] in (27, 28)
    low_v = sig[:64] + bytes([sig[64] - 27])
    _send(w3, token.get_function_by_signature(TWA_BYTES)(*args, low_v), sender=accounts[1])
    assert token.functions.balanceOf(accounts[2]).call() == 1


def test_replayed_nonce_reverts(w3: Web3, token: Contract, accounts: list[str]) -> None:
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1_000)
    _send(w3, token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)), sender=accounts[1])
    for fn in (
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
        token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)),
    ):
        _reverts(fn, "FiatTokenV2: authorization is used or canceled", accounts[1])
    assert token.functions.balanceOf(accounts[2]).call() == 1_000


def test_expired_authorization_reverts(w3: Web3, token: Contract, accounts: list[str]) -> None:
    now = _now(w3)
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1, valid_after=0, valid_before=now - 1)
    _reverts(
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
        "FiatTokenV2: authorization is expired",
        accounts[1],
    )
    # validBefore is exclusive: once block time reaches validBefore the authorization is expired.
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1, valid_after=0, valid_before=now + 30)
    _time_travel(w3, now + 30)
    _reverts(
        token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)),
        "FiatTokenV2: authorization is expired",
        accounts[1],
    )


def test_not_yet_valid_authorization_reverts_then_succeeds(
    w3: Web3, token: Contract, accounts: list[str]
) -> None:
    now = _now(w3)
    args, signed = _authorization(
        w3, token, PAYER, accounts[2], 7, valid_after=now + 600, valid_before=now + 7200
    )
    fn = token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed))
    _reverts(fn, "FiatTokenV2: authorization is not yet valid", accounts[1])
    _time_travel(w3, now + 601)
    _send(w3, token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)), sender=accounts[1])
    assert token.functions.balanceOf(accounts[2]).call() == 7


def test_wrong_signer_reverts(w3: Web3, token: Contract, accounts: list[str]) -> None:
    # Mallory signs an authorization that claims to move PAYER's funds.
    args, signed = _authorization(w3, token, MALLORY, accounts[2], 1_000, from_=PAYER.address)
    for fn in (
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
        token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)),
    ):
        _reverts(fn, "FiatTokenV2: invalid signature", accounts[1])

    # A signature over different terms (value changed after signing) fails too.
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1_000)
    tampered = (*args[:2], 1_001, *args[3:])
    _reverts(
        token.get_function_by_signature(TWA_VRS)(*tampered, *_vrs(signed)),
        "FiatTokenV2: invalid signature",
        accounts[1],
    )
    # Signed for ReceiveWithAuthorization, submitted as TransferWithAuthorization.
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1, primary_type="ReceiveWithAuthorization")
    _reverts(
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
        "FiatTokenV2: invalid signature",
        accounts[1],
    )
    assert token.functions.balanceOf(PAYER.address).call() == 100_000_000


def test_malformed_signatures_rejected(w3: Web3, token: Contract, accounts: list[str]) -> None:
    args, signed = _authorization(w3, token, PAYER, accounts[2], 1)
    sig = bytes(signed.signature)
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    high_s = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # same signer, malleated (EIP-2)
    bad = [
        sig[:64],  # too short
        sig + b"\x00",  # too long
        sig[:64] + b"\x1d",  # v = 29
        high_s,
        b"\x00" * 65,
    ]
    for candidate in bad:
        _reverts(
            token.get_function_by_signature(TWA_BYTES)(*args, candidate),
            "FiatTokenV2: invalid signature",
            accounts[1],
        )
    # The untouched signature still works.
    _send(w3, token.get_function_by_signature(TWA_BYTES)(*args, sig), sender=accounts[1])
    assert token.functions.balanceOf(accounts[2]).call() == 1

    # The zero address can never be authorized (ecrecover's failure value is not a signer).
    zero = "0x" + "00" * 20
    args, _ = _authorization(w3, token, PAYER, accounts[2], 0, from_=zero)
    _reverts(
        token.get_function_by_signature(TWA_BYTES)(*args, b"\x00" * 65),
        "FiatTokenV2: invalid signature",
        accounts[1],
    )


def test_insufficient_balance_reverts(w3: Web3, token: Contract, accounts: list[str]) -> None:
    args, signed = _authorization(w3, token, PAYER, accounts[2], 100_000_001)
    _reverts(
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
        "ERC20: transfer amount exceeds balance",
        accounts[1],
    )
    # A failed transfer does not consume the nonce.
    assert token.functions.authorizationState(PAYER.address, args[5]).call() is False


def test_cancel_authorization(w3: Web3, token: Contract, accounts: list[str]) -> None:
    cancel_types = {"CancelAuthorization": CANCEL_FIELDS}

    for cancel_sig, twa_sig in ((CANCEL_VRS, TWA_VRS), (CANCEL_BYTES, TWA_BYTES)):
        args, signed = _authorization(w3, token, PAYER, accounts[2], 1_000)
        nonce = args[5]
        cancel = PAYER.sign_typed_data(
            _domain(w3, token), cancel_types, {"authorizer": PAYER.address, "nonce": nonce}
        )
        cancel_args = _vrs(cancel) if cancel_sig == CANCEL_VRS else (bytes(cancel.signature),)

        # Only the authorizer can cancel.
        forged = MALLORY.sign_typed_data(
            _domain(w3, token), cancel_types, {"authorizer": PAYER.address, "nonce": nonce}
        )
        _reverts(
            token.get_function_by_signature(CANCEL_VRS)(PAYER.address, nonce, *_vrs(forged)),
            "FiatTokenV2: invalid signature",
            accounts[1],
        )

        receipt = _send(
            w3,
            token.get_function_by_signature(cancel_sig)(PAYER.address, nonce, *cancel_args),
            sender=accounts[1],
        )
        (event,) = token.events.AuthorizationCanceled().process_receipt(receipt, errors=DISCARD)
        assert event["args"]["authorizer"] == PAYER.address and event["args"]["nonce"] == nonce
        assert token.functions.authorizationState(PAYER.address, nonce).call() is True

        transfer_args = _vrs(signed) if twa_sig == TWA_VRS else (bytes(signed.signature),)
        _reverts(
            token.get_function_by_signature(twa_sig)(*args, *transfer_args),
            "FiatTokenV2: authorization is used or canceled",
            accounts[1],
        )
        _reverts(
            token.get_function_by_signature(cancel_sig)(PAYER.address, nonce, *cancel_args),
            "FiatTokenV2: authorization is used or canceled",
            accounts[1],
        )
    assert token.functions.balanceOf(accounts[2]).call() == 0


def test_receive_with_authorization_requires_payee_caller(
    w3: Web3, token: Contract, accounts: list[str]
) -> None:
    payee, other = accounts[2], accounts[3]
    args, signed = _authorization(w3, token, PAYER, payee, 3_000, primary_type="ReceiveWithAuthorization")

    _reverts(
        token.get_function_by_signature(RWA_VRS)(*args, *_vrs(signed)),
        "FiatTokenV2: caller must be the payee",
        other,
    )
    # A receive authorization cannot be used through transferWithAuthorization either.
    _reverts(
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
        "FiatTokenV2: invalid signature",
        other,
    )
    receipt = _send(w3, token.get_function_by_signature(RWA_VRS)(*args, *_vrs(signed)), sender=payee)
    assert (
        token.events.AuthorizationUsed().process_receipt(receipt, errors=DISCARD)[0]["args"]["nonce"]
        == args[5]
    )
    assert token.functions.balanceOf(payee).call() == 3_000

    # Bytes overload; a TransferWithAuthorization signature is not valid for receive.
    args, signed = _authorization(w3, token, PAYER, payee, 4_000, primary_type="ReceiveWithAuthorization")
    _reverts(
        token.get_function_by_signature(RWA_BYTES)(*args, bytes(signed.signature)),
        "FiatTokenV2: caller must be the payee",
        other,
    )
    t_args, t_signed = _authorization(w3, token, PAYER, payee, 4_000)
    _reverts(
        token.get_function_by_signature(RWA_BYTES)(*t_args, bytes(t_signed.signature)),
        "FiatTokenV2: invalid signature",
        payee,
    )
    _send(w3, token.get_function_by_signature(RWA_BYTES)(*args, bytes(signed.signature)), sender=payee)
    assert token.functions.balanceOf(payee).call() == 7_000


# --------------------------------------------------------------------------- EIP-1271


def test_smart_wallet_is_valid_signature(wallet: Contract) -> None:
    digest = keccak(b"paywire")
    good = Account.unsafe_sign_hash(digest, WALLET_OWNER.key)
    bad = Account.unsafe_sign_hash(digest, MALLORY.key)
    assert wallet.functions.owner().call() == WALLET_OWNER.address
    assert wallet.functions.isValidSignature(digest, bytes(good.signature)).call() == ERC1271_MAGIC
    assert wallet.functions.isValidSignature(digest, bytes(bad.signature)).call() == b"\xff" * 4
    assert wallet.functions.isValidSignature(digest, b"\x01" * 64).call() == b"\xff" * 4
    assert wallet.functions.isValidSignature(keccak(b"other"), bytes(good.signature)).call() == b"\xff" * 4


def test_eip1271_wallet_authorization(
    w3: Web3, token: Contract, wallet: Contract, accounts: list[str]
) -> None:
    payee = accounts[2]
    # The wallet's owner signs the EIP-712 digest for an authorization whose `from` is the wallet.
    args, signed = _authorization(w3, token, WALLET_OWNER, payee, 5_000_000, from_=wallet.address)
    _send(w3, token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)), sender=accounts[1])
    assert token.functions.balanceOf(wallet.address).call() == 45_000_000
    assert token.functions.balanceOf(payee).call() == 5_000_000
    assert token.functions.authorizationState(wallet.address, args[5]).call() is True

    # (v, r, s) overload takes the same path (r || s || v is handed to the wallet).
    args, signed = _authorization(w3, token, WALLET_OWNER, payee, 1_000_000, from_=wallet.address)
    _send(w3, token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)), sender=accounts[1])
    assert token.functions.balanceOf(payee).call() == 6_000_000

    # Anyone else's signature is rejected by the wallet.
    args, signed = _authorization(w3, token, MALLORY, payee, 1_000_000, from_=wallet.address)
    for fn in (
        token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)),
        token.get_function_by_signature(TWA_VRS)(*args, *_vrs(signed)),
    ):
        _reverts(fn, "FiatTokenV2: invalid signature", accounts[1])

    # A contract without isValidSignature (the token itself) cannot authorize: the failed call is handled.
    _send(w3, token.functions.mint(token.address, 10))
    args, signed = _authorization(w3, token, WALLET_OWNER, payee, 10, from_=token.address)
    _reverts(
        token.get_function_by_signature(TWA_BYTES)(*args, bytes(signed.signature)),
        "FiatTokenV2: invalid signature",
        accounts[1],
    )


def test_eip1271_wallet_cancel_and_permit(
    w3: Web3, token: Contract, wallet: Contract, accounts: list[str]
) -> None:
    nonce = os.urandom(32)
    cancel_types = {"CancelAuthorization": CANCEL_FIELDS}
    cancel = WALLET_OWNER.sign_typed_data(
        _domain(w3, token), cancel_types, {"authorizer": wallet.address, "nonce": nonce}
    )
    _send(w3, token.get_function_by_signature(CANCEL_BYTES)(wallet.address, nonce, bytes(cancel.signature)))
    assert token.functions.authorizationState(wallet.address, nonce).call() is True

    spender = accounts[4]
    deadline = _now(w3) + 3600
    signed = _sign_permit(w3, token, WALLET_OWNER, wallet.address, spender, 123, 0, deadline)
    _send(w3, token.functions.permit(wallet.address, spender, 123, deadline, *_vrs(signed)))
    assert token.functions.allowance(wallet.address, spender).call() == 123


# --------------------------------------------------------------------------- EIP-2612


def _sign_permit(
    w3: Web3,
    token: Contract,
    signer: LocalAccount,
    owner: str,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> Any:
    types = {
        "Permit": [
            {"name": "owner", "type": "address"},
            {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ]
    }
    message = {"owner": owner, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline}
    return signer.sign_typed_data(_domain(w3, token), types, message)


def test_permit(w3: Web3, token: Contract, accounts: list[str]) -> None:
    spender, relayer = accounts[3], accounts[1]
    deadline = _now(w3) + 3600
    assert token.functions.nonces(PAYER.address).call() == 0
    signed = _sign_permit(w3, token, PAYER, PAYER.address, spender, 2_500_000, 0, deadline)

    receipt = _send(
        w3, token.functions.permit(PAYER.address, spender, 2_500_000, deadline, *_vrs(signed)), relayer
    )
    (approval,) = token.events.Approval().process_receipt(receipt, errors=DISCARD)
    assert approval["args"]["owner"] == PAYER.address
    assert approval["args"]["spender"] == spender
    assert token.functions.allowance(PAYER.address, spender).call() == 2_500_000
    assert token.functions.nonces(PAYER.address).call() == 1

    _send(w3, token.functions.transferFrom(PAYER.address, spender, 2_500_000), sender=spender)
    assert token.functions.balanceOf(spender).call() == 2_500_000

    # Replaying the same permit fails: the nonce has moved on.
    _reverts(
        token.functions.permit(PAYER.address, spender, 2_500_000, deadline, *_vrs(signed)),
        "EIP2612: invalid signature",
        relayer,
    )


def test_bad_permits_fail(w3: Web3, token: Contract, accounts: list[str]) -> None:
    spender, relayer = accounts[3], accounts[1]
    now = _now(w3)

    forged = _sign_permit(w3, token, MALLORY, PAYER.address, spender, 1, 0, now + 3600)
    _reverts(
        token.functions.permit(PAYER.address, spender, 1, now + 3600, *_vrs(forged)),
        "EIP2612: invalid signature",
        relayer,
    )
    wrong_nonce = _sign_permit(w3, token, PAYER, PAYER.address, spender, 1, 5, now + 3600)
    _reverts(
        token.functions.permit(PAYER.address, spender, 1, now + 3600, *_vrs(wrong_nonce)),
        "EIP2612: invalid signature",
        relayer,
    )
    signed = _sign_permit(w3, token, PAYER, PAYER.address, spender, 1, 0, now + 3600)
    _reverts(
        token.functions.permit(PAYER.address, spender, 2, now + 3600, *_vrs(signed)),
        "EIP2612: invalid signature",
        relayer,
    )
    expired = _sign_permit(w3, token, PAYER, PAYER.address, spender, 1, 0, now - 1)
    _reverts(
        token.functions.permit(PAYER.address, spender, 1, now - 1, *_vrs(expired)),
        "FiatTokenV2: permit is expired",
        relayer,
    )
    assert token.functions.nonces(PAYER.address).call() == 0
    assert token.functions.allowance(PAYER.address, spender).call() == 0
