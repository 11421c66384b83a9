"""A buyer's Solana key from the forms Solana users hold: the 64-byte keypair, a ``solana-keygen`` JSON file and
a wallet's base58 export. Keys come from ``solders`` (Solana's Rust SDK): the loaded key has the same address and
makes the same signatures (Ed25519 is deterministic) that verify with ``solders``. Broken keys are refused with
a message that says what is wrong and never quotes the secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from solders.keypair import Keypair

from paywire.errors import ConfigError
from paywire.identity.did import b58encode
from paywire.identity.siws import SolanaKey, verify_ed25519
from paywire.identity.solana_keys import SolanaKeyError

MESSAGE = b"example.com wants you to sign in with your Solana account:"


def keypairs() -> list[Keypair]:
    """Fresh random keys, and the all-zero seed (its base58 starts with a run of '1's: leading zero bytes)."""
    return [Keypair(), Keypair(), Keypair.from_seed(bytes(32))]


def assert_same_account(key: SolanaKey, kp: Keypair) -> None:
    assert key.address == str(kp.pubkey())
    signature = key.sign_message(MESSAGE)
    assert signature == bytes(kp.sign_message(MESSAGE))
    assert kp.sign_message(MESSAGE).verify(kp.pubkey(), MESSAGE)
    assert verify_ed25519(bytes(kp.pubkey()), signature, MESSAGE.decode())


def secrets_of(kp: Keypair) -> list[str]:
    """Renderings of the secret a message must not contain."""
    seed = kp.secret()
    return [str(kp), b58encode(seed), seed.hex(), bytes(kp).hex(), json.dumps(list(seed))[1:-1], kp.to_json()[1:-1]]


def assert_no_secret(err: pytest.ExceptionInfo[SolanaKeyError], kp: Keypair) -> None:
    text = str(err.value) + repr(err.value)
    for secret in secrets_of(kp):
        assert secret not in text, text
    shown = err.value.__cause__ or (None if err.value.__suppress_context__ else err.value.__context__)
    assert shown is None, shown  # no chained exception (a decoder's) is shown with it


# -- the three forms --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kp", keypairs(), ids=["random-1", "random-2", "zero-seed"])
def test_the_64_byte_keypair_is_the_same_account(kp: Keypair) -> None:
    assert_same_account(SolanaKey.from_keypair_bytes(bytes(kp)), kp)
    assert_same_account(SolanaKey(kp.secret()), kp)  # the 32-byte seed, as before
    with pytest.raises(ValueError, match=r"takes the 32-byte Ed25519 seed, got 64 bytes .*from_keypair_bytes"):
        SolanaKey(bytes(kp))


@pytest.mark.parametrize("kp", keypairs(), ids=["random-1", "random-2", "zero-seed"])
def test_a_solana_keygen_file_is_the_same_account(kp: Keypair, tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    path.write_text(kp.to_json())  # solana-keygen's format: [n, n, …] (64 numbers)
    assert_same_account(SolanaKey.from_keygen_file(path), kp)
    spaced = tmp_path / "spaced.json"
    spaced.write_text(json.dumps(list(bytes(kp)), indent=2) + "\n")
    assert_same_account(SolanaKey.from_keygen_file(str(spaced)), kp)


def test_a_keygen_file_under_home_is_found_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kp = Keypair()
    (tmp_path / ".config" / "solana").mkdir(parents=True)
    (tmp_path / ".config" / "solana" / "id.json").write_text(kp.to_json())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert_same_account(SolanaKey.from_keygen_file("~/.config/solana/id.json"), kp)


@pytest.mark.parametrize("kp", keypairs(), ids=["random-1", "random-2", "zero-seed"])
def test_a_base58_export_is_the_same_account(kp: Keypair) -> None:
    exported = str(kp)  # solders' base58 of the 64 bytes: what Phantom's "export private key" shows
    assert Keypair.from_base58_string(exported).pubkey() == kp.pubkey()
    assert_same_account(SolanaKey.from_base58(exported), kp)
    assert_same_account(SolanaKey.from_base58(f"  {exported}\n"), kp)  # pasted with blanks


def test_repr_names_the_address_only() -> None:
    kp = Keypair()
    text = repr(SolanaKey.from_base58(str(kp)))
    assert text == f"SolanaKey({kp.pubkey()})"
    assert all(secret not in text for secret in secrets_of(kp))


# -- refused ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 32, 63, 65, 96])
def test_a_keypair_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_keypair_bytes(bytes(Keypair())[:length] + bytes(max(0, length - 64)))
    assert str(err.value) == f"a Solana keypair is 64 bytes (seed then public key), got {length} bytes"
    assert isinstance(err.value, ValueError) and isinstance(err.value, ConfigError)


def test_a_keypair_whose_public_half_is_another_key_is_refused() -> None:
    mine, other = Keypair(), Keypair()
    spliced = mine.secret() + bytes(other.pubkey())
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_keypair_bytes(spliced)
    assert str(err.value) == (f"a Solana keypair: its public half ({other.pubkey()}) is not the public key of its "
                              f"secret half ({mine.pubkey()}); the key is corrupted or spliced from two keys")
    assert_no_secret(err, mine)
    flipped = bytearray(bytes(mine))
    flipped[63] ^= 1  # one bit of the public half
    with pytest.raises(SolanaKeyError, match="is not the public key of its secret half"):
        SolanaKey.from_keypair_bytes(bytes(flipped))


def test_a_spliced_keygen_file_and_base58_export_are_refused(tmp_path: Path) -> None:
    mine, other = Keypair(), Keypair()
    spliced = mine.secret() + bytes(other.pubkey())
    path = tmp_path / "id.json"
    path.write_text(json.dumps(list(spliced)))
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_keygen_file(path)
    assert str(err.value).startswith(f"the keypair in {path}: its public half ({other.pubkey()}) is not")
    assert_no_secret(err, mine)
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_base58(b58encode(spliced))
    assert str(err.value).startswith(f"the base58 Solana key: its public half ({other.pubkey()}) is not")
    assert_no_secret(err, mine)


@pytest.mark.parametrize(("content", "problem"), [
    ("", "is not JSON (Expecting value at line 1 column 1); expected an array of 64 numbers"),
    ("[1, 2,", "is not JSON"),
    ('{"secret": [1, 2]}', "holds a JSON dict, expected an array of 64 numbers"),
    (json.dumps(list(range(63))), "holds 63 numbers, expected 64 (seed then public key)"),
    (json.dumps([*range(63), 256]), "entry 63 is not a byte (an integer 0..255)"),
    (json.dumps([*range(63), -1]), "entry 63 is not a byte"),
    (json.dumps([True, *range(63)]), "entry 0 is not a byte"),
    (json.dumps([1.5, *range(63)]), "entry 0 is not a byte"),
])
def test_a_broken_keygen_file_is_refused_naming_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "id.json"
    path.write_text(content)
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_keygen_file(path)
    assert str(err.value).startswith(f"solana-keygen file {path}"), str(err.value)
    assert problem in str(err.value), str(err.value)


def test_a_keygen_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SolanaKeyError, match=r"cannot read solana-keygen file .*missing\.json: No such file"):
        SolanaKey.from_keygen_file(tmp_path / "missing.json")
    binary = tmp_path / "id.json"
    binary.write_bytes(b"\xff\xfe" + bytes(Keypair()))
    with pytest.raises(SolanaKeyError, match="is not UTF-8 text; expected a JSON array of 64 numbers"):
        SolanaKey.from_keygen_file(binary)


def test_bad_base58_is_refused_naming_the_position_not_the_character() -> None:
    kp = Keypair()
    exported = str(kp)
    for bad in "0OIl+/":
        text = exported[:10] + bad + exported[11:]
        with pytest.raises(SolanaKeyError) as err:
            SolanaKey.from_base58(text)
        assert str(err.value) == (f"the Solana key is not base58: character 11 of {len(text)} is outside the "
                                  "base58 alphabet")
        assert_no_secret(err, kp)
    with pytest.raises(SolanaKeyError, match="the base58 Solana key is empty"):
        SolanaKey.from_base58(" \n")


def test_base58_of_the_wrong_length_is_refused() -> None:
    kp = Keypair()
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_base58(str(kp.pubkey()))  # an address pasted where the secret goes
    assert "decodes to 32 bytes: that is a Solana address (a public key) or a bare seed" in str(err.value)
    with pytest.raises(SolanaKeyError) as err:
        SolanaKey.from_base58(b58encode(bytes(kp) + b"\x01"))
    assert str(err.value) == "the base58 Solana key decodes to 65 bytes, expected 64 (seed then public key)"
    assert_no_secret(err, kp)
