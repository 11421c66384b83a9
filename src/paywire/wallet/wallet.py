"""A buyer's wallet: who signs (env key, keystore file, or any signer callable) and how to read its balances."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from paywire.errors import ChainError, ConfigError
from paywire.evm.signer import EvmSigner, LocalSigner
from paywire.wallet.keystore import decrypt_keystore, resolve_password
from paywire.wallet.signers import CallableSigner, SignFn
from paywire.x402.networks import evm_chain_id

if TYPE_CHECKING:  # the chain layer is imported on first use: it pulls in heavy dependencies
    from paywire.chain.base import Chain
    from paywire.chain.rpc import RpcChain
    from paywire.identity.siws import SolanaKey
    from paywire.lightning.base import LightningBackend
    from paywire.schemes.registry import ClientScheme

KEY_ENV = "PAYWIRE_WALLET_KEY"
KEYSTORE_ENV = "PAYWIRE_KEYSTORE"
RPC_ENV = "PAYWIRE_RPC"


def parse_rpc(spec: str) -> str | dict[str, str]:
    """``https://node`` (any network, matched by chain id) or ``eip155:8453=https://a,eip155:84532=https://b``."""
    spec = spec.strip()
    if "=" not in spec:
        return spec
    out: dict[str, str] = {}
    for part in spec.split(","):
        net, sep, url = part.strip().partition("=")
        if not sep or not url:
            raise ConfigError(f"bad {RPC_ENV} entry {part!r}: write network=url")
        out[net.strip()] = url.strip()
    return out


class Wallet:
    """Signs payments for one EVM address; reads balances through ``paywire.chain`` when it knows a node.

    ``rpc``: one node URL (used for whichever network its chain id matches) or ``{network: url}``;
    ``chains``: ready ``Chain`` objects per CAIP-2 network (not closed by the wallet).
    """

    def __init__(self, signer: EvmSigner, *, rpc: str | Mapping[str, str] | None = None,
                 chains: Mapping[str, Chain] | None = None, lightning: LightningBackend | None = None,
                 solana: SolanaKey | None = None) -> None:
        self.signer = signer
        self.solana = solana
        """A Solana account (:class:`~paywire.identity.siws.SolanaKey`) to answer ``solana:`` sign-in challenges."""
        self.lightning = lightning
        """A Lightning wallet (``LnbitsBackend(url, admin_key=…)``, ``LndRestBackend``) for MPP lightning / L402."""
        self._given: dict[str, Chain] = dict(chains or {})
        self._rpc_any = rpc if isinstance(rpc, str) else None
        self._rpc_map: dict[str, str] = dict(rpc) if isinstance(rpc, Mapping) else {}
        self._owned: dict[str, RpcChain] = {}
        self._any_chain: RpcChain | None = None
        self._any_id: int | None = None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_key(cls, private_key: bytes | str, **kw: object) -> Wallet:
        """A raw secp256k1 key (bytes or hex)."""
        return cls(LocalSigner(private_key), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_keystore(cls, path: str | Path, password: str | None = None, *, prompt: bool = True,
                      env: Mapping[str, str] | None = None, **kw: object) -> Wallet:
        """An encrypted keystore file; the password comes from the argument, ``$PAYWIRE_KEYSTORE_PASSWORD``
        or a terminal prompt."""
        pw = resolve_password(password, env=env, prompt=prompt)
        return cls(LocalSigner(decrypt_keystore(path, pw)), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_signer(cls, sign: SignFn, address: str, **kw: object) -> Wallet:
        """Any signer (KMS, HSM, hardware): ``sign(digest32) -> 65-byte signature``, sync or async."""
        return cls(CallableSigner(address, sign), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, prompt: bool = True, **kw: object) -> Wallet:
        """``$PAYWIRE_WALLET_KEY`` (hex key), else ``$PAYWIRE_KEYSTORE`` (file; password from
        ``$PAYWIRE_KEYSTORE_PASSWORD`` or a prompt). ``$PAYWIRE_RPC`` sets the node(s) for balances."""
        environ = os.environ if env is None else env
        if "rpc" not in kw and environ.get(RPC_ENV):
            kw["rpc"] = parse_rpc(environ[RPC_ENV])
        key = environ.get(KEY_ENV)
        if key:
            try:
                return cls.from_key(key.strip(), **kw)
            except ValueError as exc:
                raise ConfigError(f"${KEY_ENV} is not a 32-byte hex private key: {exc}") from None
        path = environ.get(KEYSTORE_ENV)
        if path:
            return cls.from_keystore(path, None, prompt=prompt, env=environ, **kw)
        raise ConfigError(f"no wallet configured: set {KEY_ENV} (hex key) or {KEYSTORE_ENV} (keystore file; "
                          "create one with `paywire wallet new`)")

    # ------------------------------------------------------------------ signing

    @property
    def address(self) -> str:
        return self.signer.address

    def schemes(self) -> Sequence[ClientScheme]:
        """The payment schemes this wallet can sign (every registered scheme that takes its EVM signer;
        Lightning invoices when it has a Lightning backend)."""
        from paywire.schemes.registry import default_registry

        schemes: list[ClientScheme] = default_registry.clients_for(self.signer)
        for scheme in schemes:  # schemes that read the chain while signing (Permit2's gasless approval)
            use_chains = getattr(scheme, "use_chains", None)
            if use_chains is not None:
                use_chains(self.chain_for)
        if self.lightning is not None:
            from paywire.client.lightning import LightningPayer

            schemes.append(LightningPayer(self.lightning))
        return schemes

    # ------------------------------------------------------------------ chain access

    async def chain_for(self, network: str) -> Chain | None:
        """The chain to read ``network`` from, or None when the wallet knows no node for it."""
        from paywire.chain.rpc import HttpTransport, RpcChain

        if network in self._given:
            return self._given[network]
        if network in self._owned:
            return self._owned[network]
        url = self._rpc_map.get(network)
        if url is not None:
            chain = RpcChain(HttpTransport(url))
            self._owned[network] = chain
            return chain
        if self._rpc_any is None or not network.startswith("eip155:"):
            return None
        if self._any_chain is None:
            self._any_chain = RpcChain(HttpTransport(self._rpc_any))
        if self._any_id is None:
            try:
                self._any_id = await self._any_chain.chain_id()
            except ChainError:
                return None
        try:
            wanted = evm_chain_id(network)
        except Exception:
            return None
        return self._any_chain if wanted == self._any_id else None

    async def balance(self, network: str, asset: str) -> int | None:
        """Token balance in atomic units, or None when it cannot be read."""
        from paywire.evm import token

        chain = await self.chain_for(network)
        if chain is None:
            return None
        try:
            return token.decode_uint(await chain.call(asset, token.balance_of(self.address)))
        except (ChainError, ValueError):
            return None

    async def native_balance(self, network: str) -> int | None:
        """Gas-token balance in wei, or None when it cannot be read."""
        chain = await self.chain_for(network)
        if chain is None:
            return None
        try:
            return await chain.get_balance(self.address)
        except ChainError:
            return None

    async def authorization_used(self, network: str, asset: str, nonce: str,
                                 valid_before: int | None = None) -> bool | None:
        """Whether the token consumed this wallet's EIP-3009 authorization ``nonce``.

        True: used (the payment settled). False: unused *and* it can never settle any more (the chain's clock
        is past ``valid_before``). None: unknown, or still usable."""
        from paywire.evm import token

        chain = await self.chain_for(network)
        if chain is None:
            return None
        try:
            used = token.decode_bool(await chain.call(
                asset, token.authorization_state(self.address, bytes.fromhex(nonce.removeprefix("0x")))))
            if used:
                return True
            if valid_before is None:
                return None
            return False if await chain.block_timestamp() > valid_before else None
        except (ChainError, ValueError):
            return None

    async def aclose(self) -> None:
        chains = list(self._owned.values()) + ([self._any_chain] if self._any_chain else [])
        self._owned.clear()
        self._any_chain = None
        await asyncio.gather(*(c.aclose() for c in chains), return_exceptions=True)

    def __repr__(self) -> str:
        return f"Wallet({self.address})"
