"""Standard Ethereum keystore files (Web3 Secret Storage v3 JSON, as geth and eth-account write them)."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paywire.errors import ConfigError
from paywire.evm.crypto import to_checksum

PASSWORD_ENV = "PAYWIRE_KEYSTORE_PASSWORD"


def encrypt_key(private_key: bytes, password: str, *, kdf: str = "scrypt",
                iterations: int | None = None) -> dict[str, Any]:
    """Encrypt a 32-byte key into keystore JSON (``kdf``: ``scrypt`` like geth, or ``pbkdf2``)."""
    import eth_keyfile

    if len(private_key) != 32:
        raise ValueError("a private key is 32 bytes")
    create: Any = eth_keyfile.create_keyfile_json  # type: ignore[attr-defined]
    data: dict[str, Any] = create(private_key, password.encode(), kdf=kdf, iterations=iterations)
    data["address"] = data["address"].lower().removeprefix("0x")
    return data


def write_keystore(path: str | Path, private_key: bytes, password: str, *, kdf: str = "scrypt",
                   iterations: int | None = None) -> Path:
    """Write an encrypted keystore file readable only by its owner; refuses to overwrite."""
    p = Path(path).expanduser()
    if p.exists():
        raise ConfigError(f"{p} already exists; not overwriting a keystore")
    p.parent.mkdir(parents=True, exist_ok=True)
    data = encrypt_key(private_key, password, kdf=kdf, iterations=iterations)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return p


def load_keystore_json(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"keystore file {p} does not exist") from None
    except ValueError as exc:
        raise ConfigError(f"{p} is not a keystore JSON file: {exc}") from None
    if not isinstance(data, dict) or ("crypto" not in data and "Crypto" not in data):
        raise ConfigError(f"{p} is not an Ethereum keystore file (no 'crypto' section)")
    return data


def keystore_address(path: str | Path) -> str | None:
    """The checksummed address a keystore file declares (no password needed), if it declares one."""
    addr = load_keystore_json(path).get("address")
    if not isinstance(addr, str) or len(addr.removeprefix("0x")) != 40:
        return None
    return to_checksum(bytes.fromhex(addr.removeprefix("0x")))


def resolve_password(password: str | None, *, env: Mapping[str, str] | None = None, prompt: bool = True,
                     what: str = "keystore password") -> str:
    """``password``, else ``$PAYWIRE_KEYSTORE_PASSWORD``, else a prompt on a terminal; ConfigError otherwise."""
    if password is not None:
        return password
    environ = os.environ if env is None else env
    from_env = environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    if prompt and _interactive():
        return getpass.getpass(f"{what}: ")
    raise ConfigError(f"no {what}: set {PASSWORD_ENV} or run in a terminal to be asked")


def _interactive() -> bool:
    import sys

    return sys.stdin is not None and sys.stdin.isatty()


def decrypt_keystore(source: str | Path | Mapping[str, Any], password: str) -> bytes:
    """The private key in a keystore file (or its parsed JSON); ConfigError on a wrong password."""
    import eth_keyfile

    data = dict(source) if isinstance(source, Mapping) else load_keystore_json(source)
    try:
        decode: Any = eth_keyfile.decode_keyfile_json  # type: ignore[attr-defined]
        key: bytes = decode(data, password.encode())
    except ValueError as exc:
        raise ConfigError(f"cannot decrypt the keystore: {exc}") from None
    return key
