"""Profiles: what ``paywire devnet`` leaves behind so ``paywire pay`` and ``paywire wallet`` work with no flags.

A profile is a JSON file with no secret in it (mode 0644 is fine): the node (``rpc``), the network, the tokens to
value at $1 (``assets``), a spending ``policy`` and a *reference* to the payer's key (``key_file``, a file of mode
0600 holding the hex key). ``paywire devnet`` writes ``~/.paywire/devnet/profile.json`` and
``~/.paywire/devnet/payer.key``.

Which profile a command uses: ``--profile PATH`` or ``$PAYWIRE_PROFILE``; else, when no wallet is configured
(``$PAYWIRE_WALLET_KEY`` / ``$PAYWIRE_KEYSTORE``), the devnet profile if it exists.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paywire.errors import ConfigError

if TYPE_CHECKING:
    from paywire.devnet import DevnetInfo

PROFILE_ENV = "PAYWIRE_PROFILE"
DEVNET_BUDGET = "$1"
"""Per payment: a devnet profile pays up to this without asking (and refuses more)."""


def devnet_dir() -> Path:
    return Path.home() / ".paywire" / "devnet"


def devnet_profile_path() -> Path:
    return devnet_dir() / "profile.json"


@dataclass(frozen=True, slots=True)
class Profile:
    """A profile file's content (see the module docstring)."""

    path: Path
    name: str
    network: str
    rpc: str
    key_file: Path
    payer: str
    assets: tuple[dict[str, Any], ...] = ()
    policy: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """The payer's hex key from ``key_file``; refused when others may read the file (like ssh does)."""
        try:
            st = self.key_file.stat()
            text = self.key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"profile {self.path}: cannot read its key file {self.key_file}: {exc}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"key file {self.key_file} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                              f"run chmod 600 {self.key_file}")
        return text


def write_devnet_profile(info: DevnetInfo, directory: Path | None = None) -> Profile:
    """Write the devnet's profile and its payer key file (0600); return the profile."""
    from paywire.devnet import write_private

    d = directory or devnet_dir()
    key_file = write_private(d / "payer.key", info.payer_key + "\n")
    if info.rpc_url is None:
        raise ConfigError("the devnet serves no RPC URL, so no profile can point at it")
    profile = Profile(
        path=d / "profile.json", name="devnet", network=info.network, rpc=info.rpc_url, key_file=key_file,
        payer=info.addresses["payer"],
        assets=({"network": info.network, "address": info.token, "name": info.token_name,
                 "version": info.token_version, "decimals": info.decimals},),
        policy={"max_per_payment": DEVNET_BUDGET, "approval_threshold": DEVNET_BUDGET,
                "allowed_networks": [info.network]},
    )
    data = {"name": profile.name, "network": profile.network, "rpc": profile.rpc, "key_file": str(key_file),
            "payer": profile.payer, "assets": list(profile.assets), "policy": profile.policy,
            "written_by": "paywire devnet"}
    tmp = profile.path.with_name(f".{profile.path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, profile.path)
    return profile


def load_profile(path: str | Path) -> Profile:
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
        return Profile(path=p, name=str(data.get("name", p.stem)), network=str(data["network"]),
                       rpc=str(data["rpc"]), key_file=Path(str(data["key_file"])).expanduser(),
                       payer=str(data.get("payer", "")), assets=tuple(data.get("assets") or ()),
                       policy=dict(data.get("policy") or {}))
    except OSError as exc:
        raise ConfigError(f"cannot read the profile {p}: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"profile {p} is not a valid profile ({type(exc).__name__}: {exc})") from None


def remove_profile_if_ours(profile: Profile) -> None:
    """Remove a profile (and its key file) when it still points at ``profile.rpc`` (a devnet that stopped)."""
    try:
        current = load_profile(profile.path)
    except ConfigError:
        return
    if current.rpc == profile.rpc:
        profile.path.unlink(missing_ok=True)
        profile.key_file.unlink(missing_ok=True)


def wallet_configured(environ: Mapping[str, str] | None = None) -> bool:
    from paywire.wallet import KEY_ENV, KEYSTORE_ENV

    env = os.environ if environ is None else environ
    return bool(env.get(KEY_ENV) or env.get(KEYSTORE_ENV))


def find_profile(explicit: str = "") -> Profile | None:
    """The profile a command uses (see the module docstring), or None."""
    given = explicit or os.environ.get(PROFILE_ENV, "")
    if given:
        return load_profile(given)
    if wallet_configured():
        return None
    p = devnet_profile_path()
    return load_profile(p) if p.exists() else None
