"""Network families: the facilitator service opens each configured network through the family registry
(``paywire.families``), keyed by CAIP-2 namespace, and its configuration refuses a network of no family.

The ``fake`` family here is registered from this file only, to show the dispatch: the service asks the registry
for the network's family, takes the rail it builds, hands it to the scheme registry and runs its closers. Its
rail and scheme are stubs (nothing settles); ``tests/test_scheme_plugin.py`` pays a test scheme end to end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from paywire.errors import ConfigError
from paywire.facilitator.config import FacilitatorConfig, NetworkConfig, load_config
from paywire.facilitator.service import FacilitatorService
from paywire.families import FamilyRegistry, OpenNetwork, default_families
from paywire.schemes.registry import default_registry
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse

NETWORK = "fake:devnet"


@dataclass(slots=True)
class FakeRail:
    network: str
    rpc: str


@dataclass(slots=True)
class FakeFamily:
    namespace: str = "fake"
    shape: str = "fake:<name>"
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def validate(self, net: NetworkConfig) -> None:
        if not net.rpc.startswith("fake://"):
            raise ConfigError(f"network {net.network}: rpc must be a fake:// URL")

    def needs_keys(self, net: NetworkConfig) -> bool:
        return False

    async def open(self, net: NetworkConfig, config: FacilitatorConfig) -> OpenNetwork:
        self.opened.append(net.network)

        async def close() -> None:
            self.closed.append(net.network)

        return OpenNetwork(FakeRail(net.network, net.rpc), net.rpc, [close])


@dataclass(slots=True)
class StubScheme:
    rails: Sequence[FakeRail]
    settings: Mapping[str, Any]
    scheme: str = "stub"
    network_pattern: str = "fake:*"

    def networks(self) -> Sequence[str]:
        return [r.network for r in self.rails]

    def signer_addresses(self) -> Sequence[str]:
        return []

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        return None

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements, *,
                     v1: bool = False) -> VerifyResponse:
        raise NotImplementedError

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements, *,
                     v1: bool = False) -> SettleResponse:
        raise NotImplementedError


@pytest.fixture
def fake() -> Iterator[FakeFamily]:
    family = FakeFamily()
    default_families.register(family)
    default_registry.register_facilitator("stub", "fake:*", lambda rails, **settings: StubScheme(rails, settings))
    try:
        yield family
    finally:
        default_families.unregister("fake")
        default_registry.unregister("stub", "fake:*")


async def test_the_service_opens_each_network_through_its_family(fake: FakeFamily, tmp_path: Path) -> None:
    config = FacilitatorConfig(networks=[NetworkConfig(NETWORK, "fake://node")],
                               store=f"sqlite:///{tmp_path / 'fac.db'}", receipt_timeout=7)
    service = await FacilitatorService.start(config)
    try:
        assert fake.opened == [NETWORK]
        assert service.rpc_urls == {NETWORK: "fake://node"}
        [scheme] = service.facilitator.schemes
        assert isinstance(scheme, StubScheme)
        assert list(scheme.rails) == [FakeRail(NETWORK, "fake://node")]  # the family's rail, as it built it
        assert scheme.settings["receipt_timeout"] == 7 and scheme.settings["store"] is service.store
        assert service.devnet is None
    finally:
        await service.aclose()
    assert fake.closed == [NETWORK]


async def test_the_family_validates_its_networks(fake: FakeFamily) -> None:
    with pytest.raises(ConfigError, match="rpc must be a fake:// URL"):
        FacilitatorConfig(networks=[NetworkConfig(NETWORK, "https://x")]).validate()
    FacilitatorConfig(networks=[NetworkConfig(NETWORK, "fake://node")]).validate()  # no keys needed: it says so


def test_an_unknown_namespace_is_refused_naming_the_network_and_the_families(tmp_path: Path) -> None:
    path = tmp_path / "fac.toml"
    path.write_text('[networks."solana:mainnet"]\nrpc = "https://x"\nkeys = ["0x01"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}).validate()
    assert str(err.value) == "network 'solana:mainnet': only eip155:<chain id> networks are supported"
    with pytest.raises(ConfigError, match="network 'nonsense': only eip155:<chain id> networks"):
        NetworkConfig("nonsense", "https://x").validate()


def test_a_registered_family_is_named_among_the_known_ones(fake: FakeFamily) -> None:
    with pytest.raises(ConfigError) as err:
        NetworkConfig("solana:mainnet", "https://x").validate()
    assert str(err.value) == ("network 'solana:mainnet': only eip155:<chain id> or fake:<name> networks are "
                              "supported")


async def test_an_unknown_namespace_stops_the_service_before_anything_opens(tmp_path: Path) -> None:
    config = FacilitatorConfig(networks=[NetworkConfig("solana:mainnet", "https://x", keys=["0x01"])],
                               store=f"sqlite:///{tmp_path / 'fac.db'}")
    with pytest.raises(ConfigError, match="only eip155:<chain id> networks are supported"):
        await FacilitatorService.start(config)
    assert not (tmp_path / "fac.db").exists()


def test_builtin_families_load_on_first_lookup_and_explicit_ones_win() -> None:
    from paywire.chain.family import EvmFamily

    registry = FamilyRegistry(["paywire.chain.family"])
    mine = FakeFamily(namespace="eip155", shape="eip155:<mine>")
    registry.register(mine)  # before the builtins load
    assert registry.get("eip155") is mine
    assert [f.namespace for f in registry.families()] == ["eip155"]
    assert isinstance(default_families.get("eip155"), EvmFamily)
    assert isinstance(default_families.for_network("eip155:8453"), EvmFamily)
