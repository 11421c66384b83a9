"""CAIP-2 helpers, v1 network names and reason codes (digest §1.7, §2, §4.5, §13.2)."""

from __future__ import annotations

import pytest

from paywire.errors import WireError
from paywire.x402 import (
    TS_ALIASES,
    V1_NETWORKS,
    canonical_reason,
    evm_chain_id,
    is_caip2,
    is_evm,
    matches_pattern,
    parse_caip2,
    reasons,
    to_caip2,
    to_v1_name,
)


@pytest.mark.parametrize(
    ("network", "parts"),
    [
        ("eip155:8453", ("eip155", "8453")),
        ("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", ("solana", "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp")),
        ("ach:us", ("ach", "us")),
        ("a-b:X_y-Z", ("a-b", "X_y-Z")),
        ("abcdefgh:" + "1" * 32, ("abcdefgh", "1" * 32)),
    ],
)
def test_parse_caip2(network: str, parts: tuple[str, str]) -> None:
    assert parse_caip2(network) == parts
    assert is_caip2(network)


@pytest.mark.parametrize(
    "network",
    [
        "",
        "eip155",
        "eip155:",
        ":1",
        "ab:1",
        "abcdefghi:1",
        "cloudflare:402",  # namespace of 10 chars is outside CAIP-2's [-a-z0-9]{3,8}
        "EIP155:1",
        "eip155:1:2",
        "eip155:" + "1" * 33,
        "eip155:1\n",
        " eip155:1",
        "eip155:1.5",
        "eip_155:1",
        "base",
    ],
)
def test_parse_caip2_rejects(network: str) -> None:
    with pytest.raises(WireError) as exc:
        parse_caip2(network)
    assert exc.value.reason == reasons.INVALID_NETWORK
    assert not is_caip2(network)


def test_parse_caip2_non_string() -> None:
    with pytest.raises(WireError):
        parse_caip2(8453)  # type: ignore[arg-type]


def test_evm_chain_id() -> None:
    assert evm_chain_id("eip155:8453") == 8453
    assert evm_chain_id("eip155:1444673419") == 1444673419
    for bad in ("eip155:08453", "eip155:0", "eip155:abc", "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "base"):
        with pytest.raises(WireError) as exc:
            evm_chain_id(bad)
        assert exc.value.reason == reasons.INVALID_NETWORK


def test_v1_network_table() -> None:
    """digest §2 chain-id table as the pinned official SDK (x402 2.25.0) has it, plus the Solana ids of §1.7
    (checklist 93). The SDK maps sei-testnet to 1328 (the digest's 713715 is outdated) and adds monad-testnet,
    celo and flare."""
    assert V1_NETWORKS["base-sepolia"] == "eip155:84532"
    assert V1_NETWORKS["base"] == "eip155:8453"
    assert V1_NETWORKS["skale-base-sepolia"] == "eip155:1444673419"
    assert V1_NETWORKS["solana"] == "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
    assert V1_NETWORKS["solana-devnet"] == "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
    assert V1_NETWORKS["solana-testnet"] == "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z"
    assert V1_NETWORKS["sei-testnet"] == "eip155:1328"
    assert V1_NETWORKS["celo"] == "eip155:42220"
    assert len(V1_NETWORKS) == 26
    assert len(set(V1_NETWORKS.values())) == len(V1_NETWORKS)
    assert all(is_caip2(v) for v in V1_NETWORKS.values())


def test_to_caip2_and_back() -> None:
    assert to_caip2("base-sepolia") == "eip155:84532"
    assert to_caip2("eip155:84532") == "eip155:84532"
    assert to_caip2("eip155:999") == "eip155:999"
    for name, caip2 in V1_NETWORKS.items():
        assert to_v1_name(caip2) == name
        assert to_caip2(name) == caip2
    assert to_v1_name("eip155:999") is None
    for bad in ("base-mainnet", "Base", ""):
        with pytest.raises(WireError) as exc:
            to_caip2(bad)
        assert exc.value.reason == reasons.INVALID_NETWORK


def test_is_evm() -> None:
    assert is_evm("eip155:1") and is_evm("base") and not is_evm("solana") and not is_evm("nope")


@pytest.mark.parametrize(
    ("network", "pattern", "expected"),
    [
        ("eip155:8453", "eip155:*", True),
        ("eip155:8453", "eip155:8453", True),
        ("eip155:8453", "eip155:84532", False),
        ("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "eip155:*", False),
        ("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "solana:*", True),
        ("base", "eip155:*", True),
        ("base", "eip155:8453", True),
        ("eip1555:1", "eip155:*", False),
        ("not a network", "eip155:*", False),
        ("eip155:1", "*", False),
    ],
)
def test_matches_pattern(network: str, pattern: str, expected: bool) -> None:
    assert matches_pattern(network, pattern) is expected


def test_reason_constants() -> None:
    """digest §4.5a/b spellings, plus the v1 amount reason and paywire's own."""
    assert reasons.INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE_MISMATCH == (
        "invalid_exact_evm_payload_authorization_value_mismatch"
    )
    assert (
        reasons.INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE
        == "invalid_exact_evm_payload_authorization_value"
    )
    assert reasons.SETTLEMENT_PENDING == "settlement_pending"
    assert reasons.SETTLEMENT_UNRESOLVED == "settlement_unresolved"
    assert {
        "insufficient_funds",
        "invalid_x402_version",
        "unexpected_settle_error",
    } <= reasons.PROTOCOL_REASONS
    assert len(reasons.WIRE_REASONS) == 13


@pytest.mark.parametrize(
    ("ts", "ours"),
    [
        ("invalid_exact_evm_scheme", "unsupported_scheme"),
        ("invalid_exact_evm_network_mismatch", "network_mismatch"),
        ("invalid_exact_evm_missing_eip712_domain", "missing_eip712_domain"),
        ("invalid_exact_evm_recipient_mismatch", "invalid_exact_evm_payload_recipient_mismatch"),
        ("invalid_exact_evm_signature", "invalid_exact_evm_payload_signature"),
        ("invalid_exact_evm_authorization_value", "invalid_exact_evm_payload_authorization_value_mismatch"),
        ("invalid_exact_evm_transaction_failed", "transaction_failed"),
        ("permit2_invalid_amount", "invalid_permit2_amount"),
    ],
)
def test_ts_aliases(ts: str, ours: str) -> None:
    """digest §4.5c / §13.2: TS/GO spellings map onto SPEC2/PY."""
    assert TS_ALIASES[ts] == ours
    assert canonical_reason(ts) == ours
    assert canonical_reason(ours) == ours
    assert ours in reasons.PROTOCOL_REASONS


def test_canonical_reason_passthrough() -> None:
    assert canonical_reason("something_new") == "something_new"
    assert canonical_reason("invalid_exact_evm_nonce_already_used") == "invalid_exact_evm_nonce_already_used"
