"""Compiled contract artifacts shipped with paywire.

The JSON files in ``paywire/evm/artifacts/`` are produced by ``node contracts/build.mjs`` from the
Solidity sources in ``contracts/src/`` with a pinned ``solc``; ``node contracts/build.mjs --check``
verifies that the committed files match the sources.

Usage::

    from paywire.evm.artifacts import load_artifact

    token = load_artifact("PaywireToken")
    w3.eth.contract(abi=token.abi, bytecode=token.bytecode)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Artifact", "artifact_names", "load_artifact", "source_path", "source_sha256"]

_PACKAGE = "paywire.evm"
_DIRECTORY = "artifacts"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# src/paywire/evm/artifacts.py -> the repository root (only meaningful in a source checkout).
_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Artifact:
    """One compiled contract. Treat ``abi`` as read-only: instances are cached and shared."""

    name: str
    abi: list[dict[str, Any]] = field(hash=False, repr=False)
    bytecode: bytes = field(repr=False)
    """Creation (init) code, without constructor arguments."""
    deployed_bytecode: bytes = field(repr=False)
    """Runtime code as emitted by solc; immutables are zero-filled placeholders in it."""
    source_sha256: str
    """sha256 (hex) of the Solidity source file the artifact was built from."""
    compiler: str
    """e.g. ``soljson-v0.8.30+commit.73712a01``."""
    source_relpath: str = ""
    """Path of the source relative to the repository root, e.g. ``contracts/src/PaywireToken.sol``."""
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    """The exact solc standard-JSON ``settings`` used for the build."""


def _hex_to_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"artifact field {what!r} is not 0x-prefixed hex")
    return bytes.fromhex(value[2:])


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid contract name: {name!r}")


def artifact_names() -> list[str]:
    """Names of all shipped artifacts, sorted."""
    directory = resources.files(_PACKAGE).joinpath(_DIRECTORY)
    return sorted(
        entry.name[: -len(".json")]
        for entry in directory.iterdir()
        if entry.name.endswith(".json") and entry.is_file()
    )


@functools.cache
def load_artifact(name: str) -> Artifact:
    """Load the artifact for contract ``name`` (e.g. ``"PaywireToken"``). Cached.

    Raises ``FileNotFoundError`` if no such artifact is shipped, ``ValueError`` if it is malformed.
    """
    _check_name(name)
    resource = resources.files(_PACKAGE).joinpath(_DIRECTORY, f"{name}.json")
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no artifact named {name!r}; available: {', '.join(artifact_names()) or 'none'}"
        ) from None
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("contractName") != name:
        raise ValueError(f"artifact {name}.json does not describe contract {name!r}")
    abi = data.get("abi")
    if not isinstance(abi, list):
        raise ValueError(f"artifact {name}.json has no ABI list")
    settings = data.get("settings", {})
    return Artifact(
        name=name,
        abi=abi,
        bytecode=_hex_to_bytes(data.get("bytecode"), "bytecode"),
        deployed_bytecode=_hex_to_bytes(data.get("deployedBytecode"), "deployedBytecode"),
        source_sha256=str(data.get("sourceSha256", "")),
        compiler=str(data.get("compiler", "")),
        source_relpath=str(data.get("sourcePath", "")),
        settings=settings if isinstance(settings, dict) else {},
    )


def source_path(name: str) -> Path | None:
    """The Solidity source of contract ``name`` in the repository checkout, e.g.
    ``<repo>/contracts/src/PaywireToken.sol``; ``None`` when paywire is installed without the repo.
    """
    _check_name(name)
    candidate = _REPO_ROOT / "contracts" / "src" / f"{name}.sol"
    return candidate if candidate.is_file() else None


def source_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, as recorded in an artifact's ``source_sha256``."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
