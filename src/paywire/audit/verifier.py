"""Checking a whole log (sans-I/O): recompute the tree from the entries, check every checkpoint's signatures
and cosignatures against trusted keys and its root against the recomputed tree, and name the first sequence
number where anything disagrees.

What each finding can say about *where*:
- an entry that does not hash to its stored leaf hash, carries another sequence number, or is missing: that
  exact sequence number;
- a checkpoint whose root differs from the recomputed tree, or that no trusted key signed, or whose witness
  cosignature does not verify: the entries after the last checkpoint that did verify (``first_bad_seq`` is
  that checkpoint's size; the finding names the range). Sign checkpoints often to narrow it.

With ``cosignatures_required``, only checkpoints cosigned by that many witnesses count as verified: a log-signed
checkpoint without them still has to match the tree, but does not vouch for anything (the log's key may be
stolen). The entries past the last cosigned checkpoint are reported as not yet witnessed, which is not a failure
(a witness runs behind the log); hold the log to a witness's own latest checkpoint with ``add_checkpoint``.
- a checkpoint larger than the log: the first missing sequence number (the tail was deleted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from paywire.audit import merkle
from paywire.audit.checkpoint import Checkpoint, FormatError, parse_signed_checkpoint
from paywire.audit.events import entry_seq
from paywire.audit.note import COSIGNATURE_V1, NoteError, Verifier, verify_note


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement: the first sequence number it makes untrustworthy, what, and why."""

    seq: int
    what: str
    why: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.what}: {self.why}"


@dataclass(slots=True)
class Report:
    size: int = 0
    checkpoints: int = 0  # checkpoints that verified
    cosigned: int = 0  # of those, cosigned by enough witnesses
    verified_size: int = 0  # entries [0, verified_size) are bound to a trusted checkpoint
    witnessed_size: int = 0  # … to one cosigned by the required witnesses
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_seq(self) -> int | None:
        return min((f.seq for f in self.findings), default=None)

    def first(self) -> Finding | None:
        return min(self.findings, key=lambda f: f.seq, default=None)


@dataclass(slots=True)
class _Anchor:
    checkpoint: Checkpoint
    source: str
    problem: str | None  # why it cannot be trusted (bad signature, bad cosignature), or None
    cosigned: bool = False  # by the required witnesses


class LogVerifier:
    """Feed checkpoints (any order) with :meth:`add_checkpoint`, then entries in order with :meth:`add_entry`,
    then :meth:`finish`."""

    def __init__(self, log_keys: Sequence[Verifier], *, witness_keys: Sequence[Verifier] = (),
                 cosignatures_required: int = 0, origin: str | None = None, collect_nodes: bool = False) -> None:
        if not log_keys:
            raise ValueError("verifying a log needs at least one trusted log key")
        self.log_keys = list(log_keys)
        self.witness_keys = [w for w in witness_keys if w.sig_type == COSIGNATURE_V1]
        self.required = cosignatures_required
        if self.required > len(self.witness_keys):
            raise ValueError(f"{self.required} cosignatures required but only {len(self.witness_keys)} witness keys")
        self.origin = origin
        self.report = Report()
        self._anchors: list[_Anchor] = []
        self._pending: list[_Anchor] = []
        self._frontier = merkle.Frontier()
        self._next = 0
        self._good_until = 0  # size of the last checkpoint that verified and matched, in order
        self._started = False
        self._stored: dict[int, Mapping[merkle.NodeId, bytes]] = {}
        self._collect = collect_nodes
        self._made: list[tuple[int, int, bytes]] = []
        self._node_reported = False
        self._entry_bad: list[int] = []  # sequence numbers of entry-level findings

    def add_checkpoint(self, note_text: str, *, source: str = "store") -> None:
        if self._started:
            raise RuntimeError("add every checkpoint before the first entry")
        try:
            cp, note = parse_signed_checkpoint(note_text)
        except FormatError as exc:
            self._anchors.append(_Anchor(Checkpoint("?", 0, merkle.EMPTY_ROOT), source, f"malformed: {exc}"))
            return
        problem = None
        if self.origin is not None and cp.origin != self.origin:
            problem = f"origin {cp.origin!r} is not the log's origin {self.origin!r}"
        else:
            try:
                verify_note(note, self.log_keys)
            except NoteError as exc:
                problem = f"not signed by a trusted log key ({exc})"
        cosigned = False
        if problem is None and self.witness_keys:
            try:
                cosigs = verify_note(note, self.witness_keys)
            except NoteError as exc:
                cosigs = []
                if "no signature by a known key" not in str(exc):
                    problem = f"a witness cosignature does not verify ({exc})"
            cosigned = len({c.verifier for c in cosigs}) >= max(self.required, 1)
        self._anchors.append(_Anchor(cp, source, problem, cosigned))

    def expect_stored_nodes(self, size: int, nodes: Mapping[merkle.NodeId, bytes]) -> None:
        """The store's tree nodes for the tree of ``size`` (``frontier_ids(size)``): checked against the tree
        recomputed from the entries when it reaches that size (proofs are served from these nodes)."""
        self._stored[size] = nodes

    def _check_stored(self, size: int) -> None:
        stored = self._stored.pop(size, None)
        if stored is None:
            return
        for (level, index), h in sorted(self._frontier.nodes().items(), key=lambda kv: kv[0][1] << kv[0][0]):
            lo, hi = index << level, (index + 1) << level
            if stored.get((level, index)) == h or any(lo <= s < hi for s in self._entry_bad):
                continue
            self.report.findings.append(Finding(
                max(lo, self._good_until), f"stored tree node (level {level}, index {index}) over [{lo}, {hi})",
                "differs from the hash recomputed from the entries: proofs served from it would fail"))
            return

    def take_nodes(self) -> list[tuple[int, int, bytes]]:
        """The interior nodes ``(level, index, hash)`` recomputed since the last call (``collect_nodes``)."""
        made, self._made = self._made, []
        return made

    def check_node(self, level: int, index: int, recomputed: bytes, stored: bytes | None) -> None:
        """Compare one stored interior node with its recomputed hash; reports the first that differs (and is
        not explained by an entry already reported in its range)."""
        if stored == recomputed or self._node_reported:
            return
        lo, hi = index << level, (index + 1) << level
        if any(lo <= s < hi for s in self._entry_bad):
            return
        self._node_reported = True
        self.report.findings.append(Finding(
            lo, f"stored tree node (level {level}, index {index}) over [{lo}, {hi})",
            "missing" if stored is None else "differs from the hash recomputed from the entries: proofs served "
                                             "from it would fail"))

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.origin is None:
            origins = {a.checkpoint.origin for a in self._anchors if a.problem is None}
            if len(origins) > 1:
                self.report.findings.append(Finding(0, "checkpoints", f"two origins signed: {sorted(origins)}"))
        self._pending = sorted(self._anchors, key=lambda a: a.checkpoint.size, reverse=True)
        self._pending_check(0)

    def _pending_check(self, size: int) -> None:
        self._check_stored(size)
        while self._pending and self._pending[-1].checkpoint.size <= size:
            anchor = self._pending.pop()
            if anchor.checkpoint.size == size:
                self._check(anchor, self._frontier.root())

    def _check(self, anchor: _Anchor, root: bytes) -> None:
        cp = anchor.checkpoint
        where = f"{anchor.source} checkpoint of size {cp.size}"
        if anchor.problem is not None:
            self.report.findings.append(Finding(self._good_until, where, anchor.problem))
            return
        if root != cp.root:
            explained = [s for s in self._entry_bad if self._good_until <= s < cp.size]
            self.report.findings.append(Finding(
                min(explained, default=self._good_until), where,
                f"its signed root differs from the tree recomputed from the entries: an entry in "
                f"[{self._good_until}, {cp.size}) was changed, removed, reordered or replaced"))
            return
        self.report.checkpoints += 1
        self.report.cosigned += anchor.cosigned
        if self.report.findings:
            return
        self.report.verified_size = cp.size
        if anchor.cosigned:
            self.report.witnessed_size = cp.size
        if anchor.cosigned or not self.required:
            self._good_until = cp.size

    def add_entry(self, seq: int, entry: bytes, leaf_hash: bytes | None = None) -> None:
        self._start()
        bad = len(self.report.findings)
        if seq != self._next:
            if seq < self._next:
                self.report.findings.append(Finding(seq, f"entry {seq}", f"repeated or out of order after "
                                                                          f"{self._next - 1}"))
                self._entry_bad.append(seq)
                return
            self.report.findings.append(Finding(self._next, f"entries {self._next}..{seq - 1}",
                                                "missing: sequence numbers must have no gaps"))
        computed = merkle.leaf_hash(entry)
        if leaf_hash is not None and leaf_hash != computed:
            self.report.findings.append(Finding(seq, f"entry {seq}", "does not hash to its stored leaf hash: the "
                                                                      "entry or its hash was edited"))
        carried = entry_seq(entry)
        if carried != seq:
            self.report.findings.append(Finding(seq, f"entry {seq}", f"carries sequence number {carried}: moved "
                                                                      "or edited"))
        if len(self.report.findings) > bad:
            self._entry_bad.append(min(f.seq for f in self.report.findings[bad:]))
        made = self._frontier.append([computed])
        if self._collect and made:
            self._made.extend(made)
        self._next = seq + 1
        self._pending_check(self._frontier.size)

    def add_entries(self, rows: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        for seq, entry, leaf in rows:
            self.add_entry(seq, entry, leaf)

    def finish(self) -> Report:
        self._start()
        self._stored.clear()
        self.report.size = self._frontier.size
        for anchor in sorted(self._pending, key=lambda a: a.checkpoint.size):
            self.report.findings.append(Finding(
                self._frontier.size, f"{anchor.source} checkpoint of size {anchor.checkpoint.size}",
                f"the log has only {self._frontier.size} entries: entries from {self._frontier.size} were deleted"))
        self._pending = []
        self.report.findings.sort(key=lambda f: f.seq)
        return self.report

    def root(self) -> bytes:
        return self._frontier.root()
