"""RFC 9162 §2.1 Merkle tree hashing (sans-I/O): leaf and node hashes, tree heads, inclusion and consistency
proofs, built from and checked against stored subtree hashes.

A *node* ``(level, index)`` is the hash of the complete subtree over leaves ``[index·2^level, (index+1)·2^level)``;
level 0 is a leaf hash. Every hash in a proof is the hash of a range ``D[lo:hi]`` whose ``lo`` is aligned to the
largest power of two not above its size, so it is a fold of at most log2(n) stored nodes: a proof costs O(log n)
lookups whatever the tree size. A log keeps its *frontier* (the complete subtrees of the current tree, largest
first) to append leaves without reading anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from hashlib import sha256

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()
"""The root hash of the empty tree (RFC 9162 §2.1.1)."""

NodeId = tuple[int, int]
"""``(level, index)``: the complete subtree over leaves ``[index << level, (index + 1) << level)``."""
Range = tuple[int, int]
"""``(lo, hi)``: the leaves ``D[lo:hi]``."""


class ProofError(ValueError):
    """A proof does not verify, or asks for sizes or indexes the tree does not have."""


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 ‖ entry)``."""
    return sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``."""
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


# ------------------------------------------------------------------------------------------- ranges → nodes


def range_nodes(lo: int, hi: int) -> list[NodeId]:
    """The complete subtrees whose fold is ``MTH(D[lo:hi])``, left to right (``lo`` aligned as in any proof)."""
    out: list[NodeId] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise ValueError(f"range [{lo}, {hi}) is not aligned to a subtree of the tree")
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of consecutive complete subtrees (largest first), as RFC 9162 nests them: from the right."""
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def range_hash(lo: int, hi: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """``MTH(D[lo:hi])`` from stored node hashes (``nodes`` must hold :func:`range_nodes`)."""
    return fold([nodes[n] for n in range_nodes(lo, hi)])


def nodes_for(ranges: Iterable[Range]) -> set[NodeId]:
    """Every stored node that the hashes of ``ranges`` need."""
    return {n for lo, hi in ranges for n in range_nodes(lo, hi)}


# ------------------------------------------------------------------------------------------- proofs as ranges


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form the inclusion proof of leaf ``index`` in a tree of ``size`` (RFC 9162
    §2.1.3.1), from the leaf's sibling up to the root's child."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[Range]:
    """The ranges whose hashes form the consistency proof from size ``old`` to ``new`` (RFC 9162 §2.1.4.1)."""
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from size {old} to {new}")
    if old in (0, new):
        return []
    out: list[Range] = []
    lo, hi, whole = 0, new, True
    while True:
        if old - lo == hi - lo:
            if not whole:
                out.append((lo, hi))
            break
        k = _split(hi - lo)
        if old - lo <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            whole = False
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    return [range_hash(lo, hi, nodes) for lo, hi in inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    return [range_hash(lo, hi, nodes) for lo, hi in consistency_ranges(old, new)]


# ------------------------------------------------------------------------------------------- verification


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` binds leaf hash ``leaf`` at ``index`` to (RFC 9162 §2.1.3.2); raises
    :class:`ProofError` if the proof has the wrong shape for ``(index, size)``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError("a proof hash is not 32 bytes")
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``root``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root of size {size}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows the tree ``old_root`` (size ``old``) is a prefix of the
    tree ``new_root`` (size ``new``) — RFC 9162 §2.1.4.2."""
    if not 0 <= old <= new:
        raise ProofError(f"size {new} is smaller than {old}: the log shrank")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("a proof hash is not 32 bytes")
    if old == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if old == new:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for size {old}: the log forked")
        return
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise ProofError("the consistency proof is empty")
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"the tree of size {new} does not extend the tree of size {old}: history was rewritten")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {new}")


# ------------------------------------------------------------------------------------------- appending


def frontier_ids(size: int) -> list[NodeId]:
    """The complete subtrees of a tree of ``size`` leaves, largest first (one per set bit of ``size``)."""
    out: list[NodeId] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


class Frontier:
    """The right edge of a growing tree: append leaf hashes, get the new stored nodes and the root."""

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = [level for level, _ in frontier_ids(size)]
        if len(levels) != len(hashes):
            raise ValueError(f"a tree of size {size} has {len(levels)} frontier hashes, got {len(hashes)}")
        self.size = size
        self._stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))

    def copy(self) -> Frontier:
        f = Frontier()
        f.size, f._stack = self.size, list(self._stack)
        return f

    def append(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Add leaf hashes; returns the interior nodes ``(level, index, hash)`` they complete (level >= 1)."""
        stack, i = self._stack, self.size
        made: list[tuple[int, int, bytes]] = []
        append = made.append
        for h in leaves:
            level = 0
            while stack and stack[-1][0] == level:
                h = node_hash(stack.pop()[1], h)
                level += 1
                append((level, i >> level, h))
            stack.append((level, h))
            i += 1
        self.size = i
        return made

    def root(self) -> bytes:
        return fold([h for _, h in self._stack])

    def nodes(self) -> dict[NodeId, bytes]:
        """The frontier as stored nodes: ``frontier_ids(size)`` → hash."""
        return dict(zip(frontier_ids(self.size), (h for _, h in self._stack), strict=True))


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root hash over leaf hashes (in memory)."""
    f = Frontier()
    f.append(leaves)
    return f.root()
