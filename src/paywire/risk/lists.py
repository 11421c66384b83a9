"""Allow, deny and sanctions lists. The sanctions list is a file (CSV or JSON of addresses) re-read when it
changes — no restart — and its version goes into every decision.

CSV: one address per line in the first column (a header line and ``#`` comments are skipped). JSON: a list of
addresses, or ``{"version": "ofac-2026-12-01", "addresses": [...]}``. Without a version the list's version is
``sha256:<first 12 hex digits of the file>``. A file that turns bad while running keeps the last good list in
force (and logs why); a bad file at startup is a :class:`~paywire.risk.model.RiskConfigError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from paywire.risk.features import LISTED, subject_value
from paywire.risk.model import Event, RiskConfigError

log = logging.getLogger("paywire.risk")


def _norm(value: str) -> str:
    v = value.strip()
    return v.lower() if v.lower().startswith("0x") else v


def parse_sanctions(data: bytes, name: str) -> tuple[frozenset[str], str]:
    """(addresses, version) from a CSV or JSON file's bytes; ``ValueError`` says what is wrong."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()[:12]
    text = data.decode("utf-8-sig")
    if name.lower().endswith(".json") or text.lstrip().startswith(("[", "{")):
        doc = json.loads(text)
        version = digest
        if isinstance(doc, dict):
            version = str(doc.get("version") or digest)
            doc = doc.get("addresses")
        if not isinstance(doc, list) or not all(isinstance(a, str) for a in doc):
            raise ValueError("expected a JSON list of addresses or {\"version\": …, \"addresses\": [...]}")
        return frozenset(_norm(a) for a in doc if a.strip()), version
    out = set()
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        cell = row[0].strip()
        if cell.lower() in ("address", "addr", "wallet"):
            continue
        out.add(_norm(cell))
    return frozenset(out), digest


class SanctionsFile:
    """A sanctions list file, re-read when its modification time or size changes (checked at most every
    ``check_every`` seconds)."""

    def __init__(self, path: str | Path, *, check_every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.check_every, self._clock = check_every, clock
        self._stamp: tuple[int, int] | None = None
        self._next = 0.0
        try:
            self.addresses, self.version = self._read()
        except (OSError, ValueError) as exc:
            raise RiskConfigError(f"sanctions list {self.path}: {exc}") from None

    def _read(self) -> tuple[frozenset[str], str]:
        st = os.stat(self.path)
        addresses, version = parse_sanctions(self.path.read_bytes(), self.path.name)
        self._stamp = (st.st_mtime_ns, st.st_size)
        return addresses, version

    def refresh(self) -> None:
        """Re-read the file if it changed since the last look (cheap: one ``stat`` per ``check_every``)."""
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.check_every
        try:
            st = os.stat(self.path)
            if (st.st_mtime_ns, st.st_size) == self._stamp:
                return
            self.addresses, self.version = self._read()
            log.info("paywire risk: sanctions list %s reloaded (%d addresses, version %s)", self.path,
                     len(self.addresses), self.version)
        except (OSError, ValueError) as exc:
            log.error("paywire risk: sanctions list %s unreadable, keeping version %s: %s", self.path,
                      self.version, exc)


class RiskLists:
    """The lists a decision consults: ``allow`` and ``deny`` (addresses, IPs, hosts) given here and/or kept in
    the SQL store (``store``: a :class:`~paywire.store.risk.RiskListStore`, shared by a fleet, re-read every
    ``store_every`` seconds — an unreadable store keeps the last lists read), and a sanctions file."""

    def __init__(self, *, allow: Iterable[str] = (), deny: Iterable[str] = (),
                 sanctions: str | Path | SanctionsFile | None = None, check_every: float = 1.0,
                 store: Any = None, store_every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._given_allow = frozenset(_norm(a) for a in allow)
        self._given_deny = frozenset(_norm(a) for a in deny)
        self._sql_allow: frozenset[str] = frozenset()
        self._sql_deny: frozenset[str] = frozenset()
        self.sanctions = (sanctions if isinstance(sanctions, SanctionsFile) or sanctions is None
                          else SanctionsFile(sanctions, check_every=check_every))
        self.store, self.store_every, self._clock = store, store_every, clock
        self._next = 0.0
        self._store_version = ""
        self._allow, self._deny = self._given_allow, self._given_deny

    @property
    def allow(self) -> frozenset[str]:
        """The allow list given in code (the SQL store's entries are added to it when decisions look up)."""
        return self._given_allow

    @allow.setter
    def allow(self, values: Iterable[str]) -> None:
        self._given_allow = frozenset(_norm(a) for a in values)
        self._allow = self._given_allow | self._sql_allow

    @property
    def deny(self) -> frozenset[str]:
        """The deny list given in code (the SQL store's entries are added to it when decisions look up)."""
        return self._given_deny

    @deny.setter
    def deny(self, values: Iterable[str]) -> None:
        self._given_deny = frozenset(_norm(a) for a in values)
        self._deny = self._given_deny | self._sql_deny

    async def refresh(self) -> None:
        """Re-read the SQL lists when ``store_every`` has passed since the last read (no store: nothing)."""
        if self.store is None:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.store_every
        try:
            allow, deny, version = await self.store.load()
        except Exception as exc:  # the database is down: the last lists read stay in force
            log.error("paywire risk: allow/deny lists unreadable in the store, keeping %s: %s",
                      self._store_version or "the lists given in code", exc)
            return
        if version != self._store_version:
            log.info("paywire risk: allow/deny lists from the store: %d allowed, %d denied (%s)", len(allow),
                     len(deny), version)
        self._sql_allow, self._sql_deny, self._store_version = allow, deny, version
        self._allow, self._deny = self._given_allow | allow, self._given_deny | deny

    @property
    def version(self) -> str:
        """The sanctions list's version (``""`` without one), plus the sizes of the allow/deny lists and the SQL
        lists' digest."""
        s = self.sanctions.version if self.sanctions else ""
        if self._store_version:
            s += f";{self._store_version}"
        return f"{s};allow={len(self._allow)};deny={len(self._deny)}" if (self._allow or self._deny) else s

    def lookup(self, event: Event, values: Mapping[str, str | None] | None = None) -> Mapping[str, bool]:
        """``<subject>_sanctioned`` / ``_denied`` / ``_allowed`` for the subjects ``event``'s checkpoint lists
        (``values``: the event's subject values when already known)."""
        if self.sanctions is not None:
            self.sanctions.refresh()
        sanctioned = self.sanctions.addresses if self.sanctions else frozenset()
        allow, deny = self._allow, self._deny
        if not (sanctioned or allow or deny):
            return {}  # the defaults already say False
        out = {}
        for subject in LISTED[event.checkpoint]:
            value = (values[subject] if values is not None else subject_value(event, subject)) or ""
            out[f"{subject}_sanctioned"] = value in sanctioned
            out[f"{subject}_denied"] = value in deny
            out[f"{subject}_allowed"] = value in allow
        return out
