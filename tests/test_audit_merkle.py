"""RFC 9162 §2.1 Merkle hashing: known roots, proofs equal to the RFC's recursive definitions, and proofs that
fail when anything in them changes. Pure functions; nothing is timed."""

from __future__ import annotations

import pytest

from paywire.audit import merkle
from paywire.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The eight-leaf test tree used by Certificate Transparency's reference code, and its roots for sizes 1..8.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: list[bytes]) -> bytes:  # RFC 9162 §2.1.1, literally
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:  # §2.1.3.1
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:  # §2.1.4.1
    n = len(leaves)
    if m == n:
        return [] if whole else [_mth(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), _mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


def _tree(n: int) -> tuple[list[bytes], dict[merkle.NodeId, bytes]]:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    nodes: dict[merkle.NodeId, bytes] = {(0, i): h for i, h in enumerate(leaves)}
    f = Frontier()
    for level, index, h in f.append(leaves):
        nodes[(level, index)] = h
    return leaves, nodes


def test_roots_match_the_certificate_transparency_test_tree() -> None:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES]
    for size, want in enumerate(CT_ROOTS, start=1):
        assert root_of(leaves[:size]).hex() == want, f"root of the CT test tree at size {size}"
    assert root_of([]) == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), (
        "the empty tree's root is SHA-256 of the empty string")


def test_frontier_roots_and_proofs_equal_the_rfc_definitions_up_to_40_leaves() -> None:
    leaves, nodes = _tree(40)
    f = Frontier()
    for n in range(1, 41):
        f.append([leaves[n - 1]])
        root = _mth(leaves[:n])
        assert f.root() == root, f"incremental root at size {n}"
        for m in range(n):
            proof = inclusion_proof(m, n, nodes)
            assert proof == _path(m, leaves[:n]), f"inclusion proof of {m} in {n} differs from PATH"
            verify_inclusion(m, n, leaves[m], proof, root)
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, nodes)
            assert proof == (_subproof(m, leaves[:n], True) if m < n else []), f"consistency {m}->{n} vs PROOF"
            verify_consistency(m, n, _mth(leaves[:m]), root, proof)


def test_a_frontier_reloaded_from_stored_nodes_continues_the_same_tree() -> None:
    leaves, nodes = _tree(77)
    ids = merkle.frontier_ids(50)
    f = Frontier(50, [nodes[i] for i in ids])
    f.append(leaves[50:])
    assert f.root() == _mth(leaves), "appending to a reloaded frontier gives the root of the whole tree"


def test_proofs_need_only_logarithmically_many_stored_nodes() -> None:
    n = 1_000_003
    for index in (0, 1, 500_000, n - 2, n - 1):
        needed = merkle.nodes_for(merkle.inclusion_ranges(index, n))
        assert len(needed) <= 2 * n.bit_length(), f"inclusion proof of {index} reads {len(needed)} nodes"
    needed = merkle.nodes_for(merkle.consistency_ranges(700_001, n))
    assert len(needed) <= 3 * n.bit_length(), f"consistency proof reads {len(needed)} nodes"


@pytest.mark.parametrize("size,index", [(1, 0), (7, 3), (8, 7), (13, 12), (33, 16)])
def test_a_changed_inclusion_proof_is_rejected(size: int, index: int) -> None:
    leaves, nodes = _tree(size)
    root = _mth(leaves)
    proof = inclusion_proof(index, size, nodes)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"other"), proof, root)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes(32)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaves[index], bad, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaves[index], [*proof, bytes(32)], root)
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaves[index], proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(size, size, leaves[index], proof, root)


def test_consistency_rejects_a_rewritten_or_shrunk_history() -> None:
    leaves, nodes = _tree(20)
    forged = list(leaves)
    forged[3] = leaf_hash(b"rewritten")
    proof = consistency_proof(7, 20, nodes)
    with pytest.raises(ProofError, match="rewritten"):
        verify_consistency(7, 20, _mth(forged[:7]), _mth(leaves), proof)
    with pytest.raises(ProofError):
        verify_consistency(7, 20, _mth(leaves[:7]), _mth(forged), proof)
    with pytest.raises(ProofError, match="shrank"):
        verify_consistency(20, 7, _mth(leaves), _mth(leaves[:7]), [])
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(20, 20, _mth(leaves), _mth(forged), [])
    with pytest.raises(ProofError):
        verify_consistency(0, 20, EMPTY_ROOT, _mth(leaves), proof)
