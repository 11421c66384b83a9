"""The buyer's ledger: budget reservations and receipts in one table, over ``paywire.store.Database``.

Every 402 the client handles leaves one row: a payment (``paid``/``unknown``/``rejected``/``failed``) or a
non-payment (``refused``/``declined``/``dry_run``). ``budget`` tracks the row's weight against the policy:

* ``reserved`` — taken before signing (in the same transaction that checked the budgets, so concurrent
  payments, threads or processes sharing the database cannot overspend);
* ``committed`` — paid;
* ``held`` — handed to a server but not confirmed (unknown outcome, or refused after we paid): it still counts,
  until :meth:`SpendLedger.reconcile` sees on chain that the authorization expired unused;
* ``released`` — definitely not paid (failed before the payment left, or reconciled);
* ``none`` — never counted (refusals, dry runs).

``reserved``, ``committed`` and ``held`` count against budgets: spend is never under-counted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from paywire.spending import (
    DAILY,
    PER_HOST,
    PER_PAYEE,
    TOTAL,
    Limits,
    Quote,
    Receipt,
    Refusal,
    Spent,
    check_budget,
)
from paywire.store.db import INLINE_MISS, Database, Executor, Params, Row, SqliteDatabase, in_transaction
from paywire.store.migrations import migrate, register

if TYPE_CHECKING:
    from paywire.audit.wiring import AuditTrail


class _Terms(Protocol):
    @property
    def scheme(self) -> str: ...
    @property
    def network(self) -> str: ...
    @property
    def asset(self) -> str: ...
    @property
    def pay_to(self) -> str: ...
    @property
    def amount(self) -> int: ...


class _Option(Protocol):
    @property
    def requirements(self) -> _Terms: ...
    @property
    def protocol(self) -> str: ...
    def wire(self) -> Any: ...


class Payable(Protocol):
    """What the ledger reads from a candidate payment (``paywire.client.core.Candidate`` is one)."""

    @property
    def option(self) -> _Option: ...
    @property
    def quote(self) -> Quote: ...


C = TypeVar("C", bound=Payable)

COUNTING = ("reserved", "committed", "held")
_COUNTS = "('reserved', 'committed', 'held')"


def _contribution(row: str, sign: str, sqlite: bool) -> str:
    """The upsert that adds (``sign`` +) or removes (-) one row's weight to/from its four running totals."""
    w = f"{sign}{row}.usd_micros"
    conflict = "usd_micros + excluded.usd_micros" if sqlite else "buyer_spend.usd_micros + EXCLUDED.usd_micros"
    return (f"INSERT INTO buyer_spend (account, scope, key, usd_micros) VALUES "
            f"({row}.account, 'day', {row}.day, {w}), ({row}.account, 'host', {row}.host, {w}), "
            f"({row}.account, 'payee', LOWER(COALESCE({row}.pay_to, '')), {w}), ({row}.account, 'total', '', {w}) "
            f"ON CONFLICT (account, scope, key) DO UPDATE SET usd_micros = {conflict};")


# What counts against the budgets, kept as running totals per (account, day / host / payee / all) by triggers,
# so a reservation reads four rows instead of summing the account's history; any statement that inserts,
# updates or deletes a payment row keeps them right, in the same transaction. Filled from the rows once.
_SAME_WEIGHT = (f"(OLD.budget IN {_COUNTS}) = (NEW.budget IN {_COUNTS}) AND OLD.usd_micros = NEW.usd_micros "
                "AND OLD.account = NEW.account AND OLD.day = NEW.day AND OLD.host = NEW.host "
                "AND COALESCE(OLD.pay_to, '') = COALESCE(NEW.pay_to, '')")
_SPEND_TOTALS: list[str | dict[str, str]] = [
    {dialect: """CREATE TABLE buyer_spend (
        account TEXT NOT NULL,
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        usd_micros BIGINT NOT NULL,
        PRIMARY KEY (account, scope, key)
    )""" + tail for dialect, tail in (("sqlite", " WITHOUT ROWID"), ("postgres", ""))},
    {"sqlite": f"""CREATE TRIGGER buyer_spend_insert AFTER INSERT ON buyer_payments
        WHEN NEW.budget IN {_COUNTS} AND NEW.usd_micros <> 0
        BEGIN {_contribution("NEW", "", True)} END""",
     "postgres": f"""CREATE FUNCTION buyer_spend_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF {_SAME_WEIGHT} THEN RETURN NULL; END IF;
            END IF;
            IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.budget IN {_COUNTS} AND OLD.usd_micros <> 0 THEN
                {_contribution("OLD", "-", False)}
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.budget IN {_COUNTS} AND NEW.usd_micros <> 0 THEN
                {_contribution("NEW", "", False)}
            END IF;
            RETURN NULL;
        END $$"""},
    {"sqlite": f"""CREATE TRIGGER buyer_spend_update_old AFTER UPDATE ON buyer_payments
        WHEN OLD.budget IN {_COUNTS} AND OLD.usd_micros <> 0 AND NOT ({_SAME_WEIGHT})
        BEGIN {_contribution("OLD", "-", True)} END""",
     "postgres": """CREATE TRIGGER buyer_spend_apply AFTER INSERT OR UPDATE OR DELETE ON buyer_payments
        FOR EACH ROW EXECUTE FUNCTION buyer_spend_apply()"""},
    {"sqlite": f"""CREATE TRIGGER buyer_spend_update_new AFTER UPDATE ON buyer_payments
        WHEN NEW.budget IN {_COUNTS} AND NEW.usd_micros <> 0 AND NOT ({_SAME_WEIGHT})
        BEGIN {_contribution("NEW", "", True)} END""",
     "postgres": "SELECT 1"},
    {"sqlite": f"""CREATE TRIGGER buyer_spend_delete AFTER DELETE ON buyer_payments
        WHEN OLD.budget IN {_COUNTS} AND OLD.usd_micros <> 0
        BEGIN {_contribution("OLD", "-", True)} END""",
     "postgres": "SELECT 1"},
    # the sums no longer scan rows, so the host and payee indexes only cost writes; reconciliation reads the
    # open rows (reserved or held) through a partial index that a payment leaves when it is finished
    "DROP INDEX buyer_payments_account_host",
    "DROP INDEX buyer_payments_account_payee",
    "CREATE INDEX buyer_payments_open ON buyer_payments (account, valid_before) WHERE budget IN ('reserved', 'held')",
    *(f"""INSERT INTO buyer_spend (account, scope, key, usd_micros)
        SELECT account, '{scope}', {key}, SUM(usd_micros) FROM buyer_payments
        WHERE budget IN {_COUNTS} GROUP BY account{group}""" for scope, key, group in (
        ("day", "day", ", day"), ("host", "host", ", host"),
        ("payee", "LOWER(COALESCE(pay_to, ''))", ", LOWER(COALESCE(pay_to, ''))"), ("total", "''", ""))),
]

register("buyer", [[
    """CREATE TABLE buyer_payments (
        id {autoinc},
        account TEXT NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        day TEXT NOT NULL,
        method TEXT NOT NULL,
        url TEXT NOT NULL,
        host TEXT NOT NULL,
        x402_version INTEGER,
        scheme TEXT,
        network TEXT,
        asset TEXT,
        pay_to TEXT,
        amount TEXT,
        usd_micros BIGINT NOT NULL DEFAULT 0,
        payload_hash TEXT,
        payment_id TEXT,
        nonce TEXT,
        valid_before BIGINT,
        tx TEXT,
        status_code INTEGER,
        outcome TEXT NOT NULL,
        budget TEXT NOT NULL,
        rule TEXT,
        reason TEXT,
        challenge TEXT,
        chosen TEXT
    )""",
    "CREATE INDEX buyer_payments_account_day ON buyer_payments (account, day, budget)",
    "CREATE INDEX buyer_payments_account_host ON buyer_payments (account, host, budget)",
    "CREATE INDEX buyer_payments_account_payee ON buyer_payments (account, pay_to, budget)",
], [
    "ALTER TABLE buyer_payments ADD COLUMN protocol TEXT",  # x402 | mpp | l402 (NULL on older rows: x402)
], _SPEND_TOTALS, [
    # identity (docs/identity.md): the DID this buyer proved to the seller (Sign-In-With-X, agent signature),
    # and the seller's signed offer and receipt (x402 offer-receipt) as JSON: what was promised and paid
    "ALTER TABLE buyer_payments ADD COLUMN identity TEXT",
    "ALTER TABLE buyer_payments ADD COLUMN proofs TEXT",
], [
    "ALTER TABLE buyer_payments ADD COLUMN audit TEXT",  # the seller's audit reference (JSON), see Receipt.audit
], [
    # nothing reads rows by (account, day) since the running totals: the index only cost every insert and
    # every budget change a page write
    "DROP INDEX buyer_payments_account_day",
], [
    "ALTER TABLE buyer_payments ADD COLUMN charged TEXT",  # the seller's receipt's amount, see Receipt.charged
]])

_RECEIPT_FIELDS = [f.name for f in fields(Receipt)]


_LAST_DAY: tuple[int, str] = (-1, "")


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of ``ts`` in UTC (the last answer is kept: most calls fall on the same day)."""
    global _LAST_DAY
    n = int(ts // 86400)
    if _LAST_DAY[0] != n:
        _LAST_DAY = (n, datetime.fromtimestamp(n * 86400, UTC).strftime("%Y-%m-%d"))
    return _LAST_DAY[1]


def _lock_key(account: str) -> int:
    return int.from_bytes(hashlib.sha256(b"paywire-buyer:" + account.encode()).digest()[:8], "big", signed=True)


_TX_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def _tx_lock(db: Database) -> asyncio.Lock:
    """One reservation transaction per database per event loop at a time: waiting writers then wait here
    instead of each holding a worker thread on SQLite's lock (the database still serializes processes)."""
    locks = _TX_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(id(db), asyncio.Lock())


_SQL_INT = 2**62  # amounts the one-statement reservation binds as SQLite integers (sums stay below 2**63)
_SCOPE_RULES = (("host", PER_HOST), ("payee", PER_PAYEE), ("day", DAILY), ("total", TOTAL))


@functools.lru_cache(maxsize=64)
def _reserve_sql(cols: tuple[str, ...], checks: tuple[str, ...]) -> str:
    """The one-statement reservation (see ``SpendLedger._reserve_inline``): insert ``cols`` when every running
    total in ``checks`` plus the price stays within its cap (a missing total is 0). Parameters: the row's values,
    then ``account, key, price, cap`` per check."""
    where = " AND ".join(
        f"COALESCE((SELECT usd_micros FROM buyer_spend WHERE account = ? AND scope = '{scope}' AND key = "
        f"{'LOWER(?)' if scope == 'payee' else '?'}), 0) + ? <= ?" for scope in checks)
    return (f"INSERT INTO buyer_payments ({', '.join(cols)}) SELECT {', '.join('?' for _ in cols)}"
            + (f" WHERE {where}" if where else ""))


def _needed(policy: Limits) -> list[str]:
    """Which sums the policy's budgets need."""
    return [name for name, rule in (("host", PER_HOST), ("payee", PER_PAYEE), ("day", DAILY), ("total", TOTAL))
            if policy.limit(rule) is not None]


def row_to_receipt(row: Row) -> Receipt:
    d: dict[str, Any] = {k: row.get(k) for k in _RECEIPT_FIELDS if k in row}
    for k in ("amount", "charged"):
        if d.get(k) is not None:
            d[k] = int(d[k])
    for k in ("usd_micros", "valid_before", "status_code", "x402_version", "id"):
        if d.get(k) is not None:
            d[k] = int(d[k])
    d["usd_micros"] = d.get("usd_micros") or 0
    for k in ("created_at", "updated_at"):
        d[k] = float(d.get(k) or 0.0)
    return Receipt(**d)


@dataclass(frozen=True, slots=True)
class Reservation(Generic[C]):
    """Budget taken for one candidate; ``id`` is the ledger row."""

    id: int
    candidate: C


@dataclass(frozen=True, slots=True)
class BudgetRefused(Generic[C]):
    """No candidate fits the budgets; one refusal per candidate (cheapest first)."""

    refusals: tuple[tuple[C, Refusal], ...]


class SpendLedger:
    """Budgets and receipts of one ``account`` (normally the wallet address) in a shared database."""

    def __init__(self, db: Database, account: str, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.account = account
        self._clock = clock
        self._ready = False
        self.audit: AuditTrail | None = None
        """Set (``paywire.audit.wiring.enable_audit``) to queue an audit event with every change, in its transaction."""

    async def ensure_schema(self) -> None:
        if self._ready:
            return
        async with _tx_lock(self.db):
            if not self._ready:
                await migrate(self.db, ["buyer"])
                self._ready = True

    async def _spent(self, ex: Executor, host: str, payee: str, day: str,
                     needed: Sequence[str] = ("host", "payee", "day", "total")) -> Spent:
        """What counts against the budgets, from the running totals (``buyer_spend``); only the ``needed`` ones
        are read (the others are 0)."""
        keys = {"host": host, "payee": payee, "day": day, "total": ""}
        wanted = [k for k in keys if k in needed]
        if not wanted:
            return Spent()
        # the payee key is lower-cased by the database, as the triggers do it
        which = " OR ".join("(scope = ? AND key = LOWER(?))" if k == "payee" else "(scope = ? AND key = ?)"
                            for k in wanted)
        params: list[Any] = [self.account] + [p for k in wanted for p in (k, keys[k])]
        rows = await ex.fetchall(f"SELECT scope, usd_micros FROM buyer_spend WHERE account = ? AND ({which})",
                                 params)
        return Spent(**{str(r["scope"]): int(r["usd_micros"]) for r in rows})

    async def spent(self, host: str = "", payee: str = "") -> Spent:
        """What counts against the budgets now."""
        await self.ensure_schema()
        return await self._spent(self.db, host, payee, utc_day(self._clock()))

    async def check(self, policy: Limits, candidates: Sequence[C]) -> C | BudgetRefused[C]:
        """Read-only budget check (dry runs): the first candidate that fits, without reserving it."""
        await self.ensure_schema()
        result: C | BudgetRefused[C] = await self._first_within(self.db, policy, candidates,
                                                                     utc_day(self._clock()), None)
        return result

    async def _first_within(self, ex: Executor, policy: Limits, candidates: Sequence[C], day: str,
                            reserve: dict[str, Any] | None) -> Any:
        """The first candidate within every budget; with ``reserve`` (row fields) it is inserted as reserved."""
        needed = _needed(policy)
        refusals: list[tuple[C, Refusal]] = []
        for c in candidates:
            spent = await self._spent(ex, c.quote.host, c.quote.payee, day, needed)
            refusal = check_budget(policy, c.quote, spent)
            if refusal is not None:
                refusals.append((c, refusal))
                continue
            if reserve is None:
                return c
            signed = reserve.get("signed")
            mark = signed[1] if signed is not None and signed[0] is c else None
            row_id = await self._insert(ex, reserve["now"], url=reserve["url"], method=reserve["method"],
                                        host=c.quote.host, x402_version=reserve["version"], candidate=c,
                                        outcome="pending" if mark is None else "signed", budget="reserved",
                                        challenge=reserve["challenge"], extra=mark)
            return Reservation(row_id, c)
        return BudgetRefused(tuple(refusals))

    async def reserve(self, policy: Limits, candidates: Sequence[C], *, url: str, method: str,
                      version: int, challenge: str,
                      signed: tuple[C, dict[str, Any]] | None = None) -> Reservation[C] | BudgetRefused[C]:
        """In one transaction: find the first candidate within every budget and reserve it (a ledger row with
        ``budget='reserved'``). Concurrent reservations of the same account are serialized by the database
        (SQLite ``BEGIN IMMEDIATE``, a Postgres advisory lock), across threads and processes.

        ``signed``: a candidate already signed (not yet sent) and its payment's identity (``payload_hash``,
        ``payment_id``, ``nonce``, ``valid_before``): when that candidate is the one reserved, the row is written
        ``signed`` with them in the same transaction (no :meth:`mark_signed` needed)."""
        await self.ensure_schema()
        now = self._clock()
        fields = {"now": now, "url": url, "method": method, "version": version, "challenge": challenge,
                  "signed": signed}
        day = utc_day(now)
        result: Reservation[C] | BudgetRefused[C]
        if isinstance(self.db, SqliteDatabase):
            if self.audit is None and candidates:  # the usual case: one statement (an audited change adds an event)
                done = self._reserve_inline(self.db, policy, candidates[0], day, fields)
                if done is not None:
                    return done
            # one BEGIN IMMEDIATE transaction, committed before ``reserve`` returns (so before the payment is sent):
            # on the event loop's thread when the write lock is free at once, else in one hop to the database's
            # transaction thread, which waits for it; SQLite serializes it against every connection and process
            async def step(ex: Executor) -> Any:
                return await self._first_within(ex, policy, candidates, day, fields)

            result = await in_transaction(self.db, step)
            return result
        async with _tx_lock(self.db), self.db.transaction() as tx:
            if self.db.dialect == "postgres":
                await tx.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(self.account),))
            result = await self._first_within(tx, policy, candidates, day, fields)
            return result

    async def aclose(self) -> None:
        """Nothing of its own to close (the ``Database`` is the caller's to close); kept for callers."""

    def _reserve_inline(self, db: SqliteDatabase, policy: Limits, c: Payable, day: str,
                        reserve: dict[str, Any]) -> Reservation[Any] | None:
        """The usual reservation in one autocommit ``INSERT … SELECT … WHERE`` that fits ``c`` under every budget
        (the running totals read by primary key, ``used + price <= cap`` as :func:`check_budget` has it), on the
        event loop's thread: SQLite takes the write lock as the statement starts, so the read and the insert are
        one serialized transaction, committed when it returns. None when it did not insert (over a budget: the
        full path says why and tries the other candidates) or would have had to wait."""
        signed = reserve.get("signed")
        mark = signed[1] if signed is not None and signed[0] is c else None
        values = self._values(reserve["now"], url=reserve["url"], method=reserve["method"], host=c.quote.host,
                              x402_version=reserve["version"], candidate=c,
                              outcome="pending" if mark is None else "signed", budget="reserved",
                              challenge=reserve["challenge"], extra=mark)
        price = c.quote.usd_micros or 0
        keys = {"host": c.quote.host, "payee": c.quote.payee, "day": day, "total": ""}
        caps = [(scope, policy.limit(rule)) for scope, rule in _SCOPE_RULES]
        checks = tuple(scope for scope, cap in caps if cap is not None)
        if abs(price) > _SQL_INT or any(abs(cap) > _SQL_INT for _, cap in caps if cap is not None):
            return None  # beyond SQLite's 64-bit integers: Python's check does it
        sql = _reserve_sql(tuple(values), checks)
        params = [*values.values()]
        for scope, cap in caps:
            if cap is not None:
                params += (self.account, keys[scope], price, cap)
        row_id = db.try_inline(sql, params, rowid=True)
        if row_id is INLINE_MISS or row_id is None:
            return None
        return Reservation(int(row_id), c)

    def _values(self, now: float, *, url: str, method: str, host: str, outcome: str, budget: str,
                x402_version: int | None = None, candidate: Payable | None = None, rule: str | None = None,
                reason: str | None = None, challenge: str | None = None, chosen: str | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new ledger row's columns."""
        values: dict[str, Any] = {
            "account": self.account, "created_at": now, "updated_at": now, "day": utc_day(now), "method": method,
            "url": url, "host": host, "x402_version": x402_version, "outcome": outcome, "budget": budget,
            "rule": rule, "reason": reason, "challenge": challenge, "chosen": chosen,
        }
        if candidate is not None:
            r = candidate.option.requirements
            values.update(scheme=r.scheme, network=r.network, asset=r.asset, pay_to=r.pay_to, amount=str(r.amount),
                          protocol=candidate.option.protocol,
                          usd_micros=candidate.quote.usd_micros or 0,
                          chosen=chosen or json.dumps(candidate.option.wire(), separators=(",", ":")))
        values.update(extra or {})
        return values

    async def _insert(self, ex: Executor, now: float, *, url: str, method: str, host: str, outcome: str,
                      budget: str, x402_version: int | None = None, candidate: Payable | None = None,
                      rule: str | None = None, reason: str | None = None, challenge: str | None = None,
                      chosen: str | None = None, extra: dict[str, Any] | None = None) -> int:
        values = self._values(now, url=url, method=method, host=host, outcome=outcome, budget=budget,
                              x402_version=x402_version, candidate=candidate, rule=rule, reason=reason,
                              challenge=challenge, chosen=chosen, extra=extra)
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        returning = "id" if self.audit is None else self.audit.returning().removeprefix(" RETURNING ")
        row = await ex.fetchone(f"INSERT INTO buyer_payments ({cols}) VALUES ({marks}) RETURNING {returning}",
                                tuple(values.values()))
        assert row is not None
        if self.audit is not None:
            await self.audit.record(ex, row, None, {"rule": rule, "reason": reason} if rule or reason else None)
        return int(row["id"])

    async def record(self, *, url: str, method: str, host: str, outcome: str, x402_version: int | None = None,
                     candidate: Payable | None = None, rule: str | None = None, reason: str | None = None,
                     challenge: str | None = None) -> int:
        """A row that never counts against budgets (refused, declined, dry run, unreadable 402)."""
        await self.ensure_schema()

        async def insert(ex: Executor) -> int:
            return await self._insert(ex, self._clock(), url=url, method=method, host=host, outcome=outcome,
                                      budget="none", x402_version=x402_version, candidate=candidate, rule=rule,
                                      reason=reason, challenge=challenge)

        return await (insert(self.db) if self.audit is None else in_transaction(self.db, insert))

    async def release(self, *, url: str, method: str, host: str, network: str, asset: str, pay_to: str,
                      amount: int, usd_micros: int, reason: str) -> int:
        """Budget coming back: a committed row of weight ``-usd_micros`` (a channel refund or withdrawal returned
        ``amount`` atomic units of a deposit that was counted whole when it was reserved)."""
        await self.ensure_schema()
        extra = {"scheme": "batch-settlement", "network": network, "asset": asset, "pay_to": pay_to,
                 "amount": str(-amount), "usd_micros": -usd_micros}

        async def insert(ex: Executor) -> int:
            return await self._insert(ex, self._clock(), url=url, method=method, host=host, outcome="refunded",
                                      budget="committed", reason=reason, extra=extra)

        return await (insert(self.db) if self.audit is None else in_transaction(self.db, insert))

    async def mark_signed(self, row_id: int, *, payload_hash: str, payment_id: str | None, nonce: str | None,
                          valid_before: int | None) -> None:
        sql = ("UPDATE buyer_payments SET payload_hash = ?, payment_id = ?, nonce = ?, valid_before = ?, "
               "outcome = 'signed', updated_at = ? WHERE id = ? AND account = ?")
        params = (payload_hash, payment_id, nonce, valid_before, self._clock(), row_id, self.account)
        if self.audit is not None:
            await self.audit.change(self.db, sql, params, key=("id", row_id))
            return
        await self._execute(sql, params)

    async def finish(self, row_id: int, *, outcome: str, budget: str, tx: str | None = None,
                     status_code: int | None = None, rule: str | None = None, reason: str | None = None,
                     identity: str | None = None, proofs: str | None = None, audit: str | None = None,
                     charged: int | None = None) -> bool:
        """Move a reserved/held row to its final state (compare-and-set: a row already committed or released
        is never changed). ``budget`` is ``committed``, ``held`` or ``released``. ``identity``: the DID the buyer
        proved; ``proofs``: the seller's signed offer and receipt (JSON); ``audit``: the seller's audit reference;
        ``charged``: the amount the seller's receipt names."""
        if budget not in ("committed", "held", "released"):
            raise ValueError(f"not a final budget state: {budget}")
        extra, extra_params = "", ()  # type: tuple[str, tuple[str | None, ...]]
        if identity is not None or proofs is not None:
            extra, extra_params = "identity = COALESCE(?, identity), proofs = COALESCE(?, proofs), ", (identity, proofs)
        if charged is not None:
            extra, extra_params = extra + "charged = ?, ", (*extra_params, str(charged))
        sql = ("UPDATE buyer_payments SET outcome = ?, budget = ?, tx = COALESCE(?, tx), "
               "status_code = COALESCE(?, status_code), rule = COALESCE(?, rule), reason = COALESCE(?, reason), "
               f"{extra}audit = COALESCE(?, audit), updated_at = ? WHERE id = ? AND account = ? "
               "AND budget IN ('reserved', 'held')")
        params = (outcome, budget, tx, status_code, rule, reason, *extra_params, audit, self._clock(), row_id,
                  self.account)
        if self.audit is not None:
            data = {k: v for k, v in (("rule", rule), ("reason", reason), ("identity", identity)) if v}
            return await self.audit.change(self.db, sql, params, key=("id", row_id), data=data or None) is not None
        n = await self._execute(sql, params)
        return n == 1

    async def get(self, row_id: int) -> Receipt | None:
        sql, params = "SELECT * FROM buyer_payments WHERE id = ? AND account = ?", (row_id, self.account)
        rows = self.db.try_inline(sql, params, fetch=True, write=False) \
            if isinstance(self.db, SqliteDatabase) else INLINE_MISS
        row = (rows[0] if rows else None) if rows is not INLINE_MISS else await self.db.fetchone(sql, params)
        return row_to_receipt(row) if row else None

    async def _execute(self, sql: str, params: Params) -> int:
        """One point write by primary key: on SQLite right here when the write lock is free (no thread hop)."""
        if isinstance(self.db, SqliteDatabase):
            n = self.db.try_inline(sql, params)
            if n is not INLINE_MISS:
                return int(n)
        return await self.db.execute(sql, params)

    async def history(self, *, limit: int | None = None, all_accounts: bool = False) -> list[Receipt]:
        """Newest first."""
        await self.ensure_schema()
        sql = "SELECT * FROM buyer_payments"
        params: list[Any] = []
        if not all_accounts:
            sql += " WHERE account = ?"
            params.append(self.account)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [row_to_receipt(r) for r in await self.db.fetchall(sql, params)]

    async def reconcile(self, used: Callable[[Receipt], Awaitable[bool | None]], *, grace: float = 1.0) -> int:
        """Settle held/stale rows whose authorization has expired: ``used(receipt)`` says whether the chain
        consumed it (True → committed as paid; False → released; None → unknown, left as is).
        Returns how many rows changed."""
        await self.ensure_schema()
        now = self._clock()
        rows = await self.db.fetchall(
            "SELECT * FROM buyer_payments WHERE account = ? AND budget IN ('held', 'reserved') "
            "AND nonce IS NOT NULL AND valid_before IS NOT NULL AND valid_before < ?",
            (self.account, now - grace),
        )
        changed = 0
        for row in rows:
            receipt = row_to_receipt(row)
            verdict = await used(receipt)
            if verdict is None:
                continue
            if verdict:
                ok = await self.finish(receipt.id or 0, outcome="paid", budget="committed",
                                       reason="authorization used on chain")
            else:
                ok = await self.finish(receipt.id or 0, outcome=receipt.outcome if receipt.outcome != "signed"
                                       else "failed", budget="released",
                                       reason="authorization expired unused on chain")
            changed += int(ok)
        return changed
