"""Audit signing keys, loaded like the wallet's: a key string in an environment variable, a key file, or a
signer callable (KMS, HSM) with its public key.

- ``PAYWIRE_AUDIT_KEY``: ``PRIVATE+KEY+name+id+base64`` (the log's key);
- ``PAYWIRE_AUDIT_KEY_FILE``: a file holding that string (mode 0600);
- ``PAYWIRE_WITNESS_KEY`` / ``PAYWIRE_WITNESS_KEY_FILE``: the same for a witness (cosigner type 0x04).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from paywire.audit.note import (
    COSIGNATURE_V1,
    ED25519,
    NoteError,
    Signer,
    SignFn,
    Verifier,
    parse_skey,
    parse_vkey,
)
from paywire.errors import ConfigError

KEY_ENV, KEY_FILE_ENV = "PAYWIRE_AUDIT_KEY", "PAYWIRE_AUDIT_KEY_FILE"
WITNESS_KEY_ENV, WITNESS_KEY_FILE_ENV = "PAYWIRE_WITNESS_KEY", "PAYWIRE_WITNESS_KEY_FILE"


def generate(name: str, *, witness: bool = False) -> Signer:
    """A new Ed25519 key for a log (``witness=False``) or a witness named ``name``."""
    return Signer.generate(name, sig_type=COSIGNATURE_V1 if witness else ED25519)


def write_key(path: str | Path, signer: Signer) -> Path:
    """Write the signing key string to a new file readable only by its owner; refuses to overwrite."""
    p = Path(path).expanduser()
    if p.exists():
        raise ConfigError(f"{p} already exists; not overwriting a key")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey + "\n")
    return p


def load_key(path: str | Path) -> Signer:
    p = Path(path).expanduser()
    try:
        return parse_skey(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"audit key file {p} does not exist") from None
    except NoteError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def from_callable(name: str, public_key: bytes, sign: SignFn, *, witness: bool = False) -> Signer:
    """A signer whose private key lives elsewhere: ``sign(message) -> 64-byte Ed25519 signature``."""
    return Signer(name, public_key, sign, sig_type=COSIGNATURE_V1 if witness else ED25519)


def from_env(env: Mapping[str, str] | None = None, *, witness: bool = False) -> Signer:
    """The log's (or the witness's) signing key from the environment."""
    environ = os.environ if env is None else env
    key_env, file_env = (WITNESS_KEY_ENV, WITNESS_KEY_FILE_ENV) if witness else (KEY_ENV, KEY_FILE_ENV)
    if environ.get(key_env):
        try:
            return parse_skey(environ[key_env])
        except NoteError as exc:
            raise ConfigError(f"${key_env}: {exc}") from None
    if environ.get(file_env):
        return load_key(environ[file_env])
    raise ConfigError(f"no audit key configured: set {key_env} (PRIVATE+KEY+…) or {file_env} (a key file); "
                      "`paywire audit keygen NAME` makes one")


def load_verifier(text: str) -> Verifier:
    """A public key from its vkey string or from a file holding one."""
    candidate = text.strip()
    try:
        return parse_vkey(candidate)
    except NoteError as exc:
        error = exc
    p = Path(candidate).expanduser()
    if p.is_file():
        try:
            return parse_vkey(p.read_text().strip())
        except NoteError as exc:
            error = exc
    raise ConfigError(f"bad verifier key {text!r}: {error}")
