"""A local chain with our token deployed and a funded payer, payee and facilitator: for demos, tests, peers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from paywire.chain.base import Chain
from paywire.chain.devkeys import dev_keys
from paywire.chain.rpc import RpcChain
from paywire.chain.tx import TxSender
from paywire.evm import token
from paywire.evm.artifacts import load_artifact
from paywire.evm.assets import Asset
from paywire.evm.signer import LocalSigner

DEFAULT_CHAIN_ID = 31337
USDC = 10**6


@dataclass(frozen=True, slots=True)
class DevnetInfo:
    """What a peer needs to use a devnet (the state file's content)."""

    rpc_url: str | None
    chain_id: int
    network: str
    token: str
    token_name: str
    token_version: str
    decimals: int
    deployer_key: str
    facilitator_key: str
    payer_key: str
    payee_key: str
    addresses: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def public(self) -> dict[str, object]:
        """Everything but the private keys: what may be printed or shown."""
        return {k: v for k, v in asdict(self).items() if not k.endswith("_key")}

    @property
    def asset(self) -> Asset:
        return Asset(self.network, self.token, self.token_name, self.token_version, self.decimals)


@dataclass(slots=True)
class Devnet:
    """A running devnet: the chain, the signers, the token."""

    chain: Chain
    info: DevnetInfo
    deployer: LocalSigner
    facilitator: LocalSigner
    payer: LocalSigner
    payee: LocalSigner
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def asset(self) -> Asset:
        return self.info.asset

    async def token_balance(self, address: str) -> int:
        return token.decode_uint(await self.chain.call(self.info.token, token.balance_of(address)))

    async def mint(self, to: str, amount: int) -> None:
        sender = self.extra.get("deployer_sender")
        if not isinstance(sender, TxSender):
            sender = TxSender(self.chain, self.deployer.private_key)
            self.extra["deployer_sender"] = sender
        tx = await sender.send(self.info.token, token.mint(to, amount))
        receipt = await self.chain.wait_for_receipt(tx)
        if receipt.status != 1:
            raise RuntimeError(f"mint reverted: {tx}")

    def write_state(self, path: str | Path) -> Path:
        """Write the state file (it holds the funded keys: created readable by its owner only, mode 0600)."""
        return write_private(path, self.info.to_json())


def write_private(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable and writable by its owner only (mode 0600 from creation, whatever the
    umask; an existing file, whatever its mode, is replaced atomically, never rewritten in place)."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


async def deploy_token(
    chain: Chain, deployer_key: bytes, *, name: str = "USD Coin", version: str = "2", symbol: str = "USDC"
) -> str:
    """Deploy ``PaywireToken`` and return its address."""
    art = load_artifact("PaywireToken")
    sender = TxSender(chain, deployer_key)
    return await sender.deploy(art.bytecode, token.constructor_args(name, version, symbol))


async def setup_devnet(
    chain: Chain,
    *,
    rpc_url: str | None = None,
    payer_funds: int = 1_000 * USDC,
    name: str = "USD Coin",
    version: str = "2",
    keys: list[bytes] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Devnet:
    """Deploy the token on ``chain`` and mint ``payer_funds`` to the payer.

    ``keys`` = [deployer, facilitator, payer, payee], each with native gas funds; defaults to the standard
    development keys that both the embedded chain and anvil fund at genesis. ``on_step`` hears each step.
    """
    step = on_step or (lambda _text: None)
    k = keys or dev_keys(4)
    deployer, facilitator, payer, payee = (LocalSigner(x) for x in k[:4])
    chain_id = await chain.chain_id()
    step(f"deploying the token ({name} v{version})")
    addr = await deploy_token(chain, deployer.private_key, name=name, version=version)
    info = DevnetInfo(
        rpc_url=rpc_url, chain_id=chain_id, network=f"eip155:{chain_id}", token=addr, token_name=name,
        token_version=version, decimals=6,
        deployer_key="0x" + deployer.private_key.hex(), facilitator_key="0x" + facilitator.private_key.hex(),
        payer_key="0x" + payer.private_key.hex(), payee_key="0x" + payee.private_key.hex(),
        addresses={"deployer": deployer.address, "facilitator": facilitator.address, "payer": payer.address,
                   "payee": payee.address},
    )
    net = Devnet(chain, info, deployer, facilitator, payer, payee)
    if payer_funds:
        step(f"funding the payer with {payer_funds / USDC:,.2f} {info.asset.symbol}")
        await net.mint(payer.address, payer_funds)
    return net



__all__ = ["DEFAULT_CHAIN_ID", "USDC", "Devnet", "DevnetInfo", "RpcChain", "deploy_token", "setup_devnet",
           "write_private"]
