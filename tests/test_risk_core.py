"""The risk engine against real parts: CEL rules (compiled by the Rust runtime), counters in this process and
in the real Redis at 127.0.0.1:6379, sanctions files on disk. Times come from an injected clock so windows
slide without waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from paywire.risk.engine import RiskEngine
from paywire.risk.features import feature_names
from paywire.risk.lists import RiskLists
from paywire.risk.model import CHECKPOINTS, Event, RiskConfigError
from paywire.risk.rules import load_rules, parse_rules
from paywire.risk.state import MemoryState

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def event(cp: str, **kw: object) -> Event:
    base: dict[str, object] = {
        "request": {"ip": "198.51.100.1", "route": "GET /x"},
        "payment": {"ip": "198.51.100.1", "route": "GET /x", "payer": "0xAA", "payee": "0xBB", "amount": 10_000,
                    "payment_key": uuid.uuid4().hex},
        "settle": {"payer": "0xAA", "payee": "0xBB", "amount": 10_000, "requester": "seller-1",
                   "payment_key": uuid.uuid4().hex},
        "buyer": {"host": "api.example", "route": "api.example/x", "payee": "0xBB", "agent": "bot", "amount": 10_000},
    }[cp]  # type: ignore[assignment]
    return Event(cp, **{**base, **kw})  # type: ignore[arg-type]


def one_rule(cp: str, action: str, when: str = "true", **extra: object) -> str:
    more = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    return f'[[rule]]\nid = "r1"\ncheckpoint = "{cp}"\nwhen = "{when}"\naction = "{action}"\n{more}'


# ------------------------------------------------------------------------------------------------ decisions


@pytest.mark.parametrize("cp", CHECKPOINTS)
@pytest.mark.parametrize("action", ["allow", "deny", "challenge", "review"])
async def test_every_action_at_every_checkpoint(cp: str, action: str) -> None:
    engine = RiskEngine(parse_rules(one_rule(cp, action, reason="because")))
    d = await engine.check(event(cp))
    assert d.action == action, d
    assert d.rule == "r1", d
    assert d.allowed == (action in ("allow", "review")), d
    assert d.reason == (None if action == "allow" else "because"), d


async def test_highest_priority_decides_and_every_match_is_listed() -> None:
    rules = parse_rules("""
[[rule]]
id = "low_deny"
checkpoint = "payment"
when = "amount > 0.0"
action = "deny"
priority = 1
[[rule]]
id = "high_allow"
checkpoint = "payment"
when = "payer_allowed"
action = "allow"
priority = 10
""")
    engine = RiskEngine(rules, lists=RiskLists(allow=["0xAA"]))
    d = await engine.check(event("payment"))
    assert (d.action, d.rule) == ("allow", "high_allow"), d
    other = await engine.check(event("payment", payer="0xCC"))
    assert (other.action, other.rule) == ("deny", "low_deny"), other


async def test_shadow_rule_is_recorded_but_a_later_enforced_rule_still_decides() -> None:
    rules = parse_rules(one_rule("payment", "deny", "amount > 0.0", shadow=True, priority=5)
                        + one_rule("payment", "review", "amount > 0.0").replace('"r1"', '"r2"'))
    d = await RiskEngine(rules).check(event("payment"))
    assert (d.action, d.rule, d.shadow) == ("review", "r2", False), d
    assert d.matched == ("r1", "r2"), d


# ------------------------------------------------------------------------------------------------ rule files


@pytest.mark.parametrize(("body", "message"), [
    ('[[rule]]\nid = "x"\ncheckpoint = "payment"\nwhen = "amount >"\naction = "deny"\n', "does not compile"),
    ('[[rule]]\nid = "x"\ncheckpoint = "payment"\nwhen = "payr_count_1m > 3"\naction = "deny"\n',
     "unknown feature(s) ['payr_count_1m']"),
    ('[[rule]]\nid = "x"\ncheckpoint = "request"\nwhen = "payer_sanctioned"\naction = "deny"\n',
     "unknown feature(s) ['payer_sanctioned'] at checkpoint 'request'"),
    ('[[rule]]\nid = "x"\ncheckpoint = "payment"\nwhen = "amount + 1.0"\naction = "deny"\n', "must be true or false"),
    ('[[rule]]\nid = "x"\ncheckpoint = "payment"\nwhen = "true"\naction = "block"\n', "action 'block'"),
    ('[[rule]]\nid = "x"\ncheckpoint = "seller"\nwhen = "true"\naction = "deny"\n', "checkpoint 'seller'"),
    ('[[rule]]\nid = "x"\ncheckpoint = "payment"\nwhen = "true"\naction = "deny"\nwhn = 1\n', "unknown key(s)"),
])
async def test_a_bad_rule_stops_startup_naming_file_rule_and_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('version = "t"\n\n' + one_rule("payment", "deny").replace('"r1"', '"fine"') + "\n" + body)
    with pytest.raises(RiskConfigError) as err:
        RiskEngine(path)
    text = str(err.value)
    assert message in text, text
    assert text.startswith(f"{path}:"), f"no file name: {text}"
    assert "'x'" in text, f"the rule id is missing: {text}"
    line = int(text.split(":")[1].split()[0])
    assert path.read_text().splitlines()[line - 1].split("=")[0].strip() in ("when", "[[rule]]"), text


async def test_duplicate_ids_and_invalid_toml_are_refused() -> None:
    with pytest.raises(RiskConfigError, match="used twice"):
        parse_rules(one_rule("payment", "deny") + one_rule("payment", "deny"))
    with pytest.raises(RiskConfigError, match="not valid TOML"):
        parse_rules("[[rule]\nid=")


async def test_shipped_default_rules_compile_for_every_checkpoint() -> None:
    rules = load_rules()
    assert rules.version.startswith("default"), rules.version
    for cp in CHECKPOINTS:
        assert rules.for_checkpoint(cp), f"no default rule at {cp}"


# ------------------------------------------------------------------------------------------------ features


async def test_sliding_window_counts_and_forgets() -> None:
    clock = Clock()
    hour = one_rule("payment", "review", "payer_count_1h > 1000 || payer_sum_1h > 1000.0").replace('"r1"', '"r2"')
    engine = RiskEngine(parse_rules(one_rule("payment", "deny", "payer_count_1m > 3") + hour), clock=clock)
    actions = []
    for _ in range(5):
        actions.append((await engine.check(event("payment"))).action)
        clock.t += 1
    assert actions == ["allow"] * 3 + ["deny"] * 2, actions
    clock.t += 61
    d = await engine.check(event("payment"))
    assert d.action == "allow", "the one-minute window did not slide"
    assert d.features["payer_count_1h"] == 6, d.features["payer_count_1h"]
    assert d.features["payer_sum_1h"] == pytest.approx(0.06), d.features["payer_sum_1h"]


async def test_first_seen_and_new_payers_per_ip() -> None:
    clock = Clock()
    engine = RiskEngine(clock=clock)
    first = await engine.check(event("payment"))
    clock.t += 30
    again = await engine.check(event("payment"))
    assert (first.features["payer_new"], again.features["payer_new"]) == (True, False)
    assert again.features["payer_age"] == pytest.approx(30.0)
    for i in range(12):
        d = await engine.check(event("payment", payer=f"0x{i:040x}", amount=1))
    assert d.features["ip_new_payers_1h"] == 13, d.features
    assert (d.action, d.rule) == ("deny", "fresh_wallet_burst"), d


async def test_failures_are_counted_per_ip_and_payer() -> None:
    engine = RiskEngine()
    for _ in range(3):
        await engine.note_failure(event("payment", payer="0xD1"))
    d = await engine.check(event("payment", payer="0xD1"))
    assert (d.action, d.reason) == ("deny", "payer_failing"), d
    assert d.features["ip_failures_1m"] == 3, d.features


async def test_buyer_price_ratio_reads_prices_paid() -> None:
    engine = RiskEngine()
    for _ in range(3):
        await engine.note_paid(event("buyer", amount=10_000))
    same = await engine.check(event("buyer", amount=12_000))
    jump = await engine.check(event("buyer", amount=100_000))
    assert same.features["price_ratio_route"] == pytest.approx(1.2)
    assert (jump.action, jump.rule) == ("deny", "price_jump"), jump


async def test_memory_state_is_bounded() -> None:
    state = MemoryState(max_keys=50)
    engine = RiskEngine(state=state)
    for i in range(200):
        await engine.check(event("request", ip=f"10.0.{i // 250}.{i % 250}"))
    assert len(state) <= 50, len(state)


async def test_every_feature_a_rule_may_name_is_present() -> None:
    engine = RiskEngine()
    for cp in CHECKPOINTS:
        d = await engine.check(event(cp))
        assert set(feature_names(cp)) <= set(d.features), set(feature_names(cp)) - set(d.features)


# ------------------------------------------------------------------------------------------------ lists


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_sanctions_file_reloads_on_change_and_versions_each_decision(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"sanctions.{fmt}"

    def write(addresses: list[str], version: str) -> None:
        if fmt == "json":
            path.write_text(json.dumps({"version": version, "addresses": addresses}))
        else:
            path.write_text("# list " + version + "\naddress\n" + "\n".join(addresses) + "\n")

    write(["0xAA"], "v1")
    engine = RiskEngine(lists=RiskLists(sanctions=path, check_every=0))
    d1 = await engine.check(event("payment"))
    write(["0xCC", "0xDD"], "v2")
    d2 = await engine.check(event("payment"))
    assert (d1.action, d1.reason) == ("deny", "sanctioned"), d1
    assert d2.action == "allow", d2
    assert d1.list_version != d2.list_version, (d1.list_version, d2.list_version)
    if fmt == "json":
        assert (d1.list_version, d2.list_version) == ("v1", "v2")


async def test_a_broken_sanctions_file_keeps_the_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('["0xAA"]')
    engine = RiskEngine(lists=RiskLists(sanctions=path, check_every=0))
    path.write_text('{"addresses": 7}')
    d = await engine.check(event("payment"))
    assert d.reason == "sanctioned", d
    with pytest.raises(RiskConfigError, match="sanctions list"):
        RiskLists(sanctions=path)


# ------------------------------------------------------------------------------------------------ Redis


def redis_state(prefix: str, url: str = REDIS_URL):  # type: ignore[no-untyped-def]
    redis = pytest.importorskip("redis")
    from paywire.risk.redis_state import RedisState

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return RedisState(url, prefix=prefix, timeout=10.0)  # outages here are refused/reset connections, not stalls


@contextlib.asynccontextmanager
async def redis_proxy() -> AsyncIterator[tuple[str, asyncio.AbstractServer, set[asyncio.StreamWriter]]]:
    """A TCP proxy to the real Redis; closing it (and its connections) is a Redis outage for its clients."""
    writers: set[asyncio.StreamWriter] = set()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", 6379)
        writers.update((cw, uw))
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0", server, writers
    finally:
        server.close()
        for w in writers:
            w.close()


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A redis-server of this test alone (no TCP port: a unix socket in a fresh directory), so the test can kill
    it; yields its URL and process once it says it accepts connections."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    d = tempfile.mkdtemp(prefix="pw-redis-")
    sock = f"{d}/redis.sock"
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", d], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the server's own log line, not a timer
            if "ready to accept connections" in line.lower():
                break
        else:
            raise RuntimeError("redis-server exited before accepting connections")
        proc.stdout.close()
        yield f"unix://{sock}?db=0", proc
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def kill(server: asyncio.AbstractServer, writers: set[asyncio.StreamWriter]) -> None:
    server.close()
    for w in writers:
        w.transport.abort()


async def test_two_engines_on_one_redis_share_one_count() -> None:
    prefix = f"pw:test:{uuid.uuid4().hex}:"
    a, b = redis_state(prefix), redis_state(prefix)
    rules = parse_rules(one_rule("payment", "deny", "payer_count_1m > 4"))
    ea, eb = RiskEngine(rules, state=a), RiskEngine(rules, state=b)
    try:
        actions = [(await (ea if i % 2 else eb).check(event("payment"))).action for i in range(8)]
        assert actions == ["allow"] * 4 + ["deny"] * 4, actions
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        ttls = [await r.ttl(k) for k in keys]
        assert keys, "nothing written to Redis"
        assert all(0 < t <= 30 * 86400 for t in ttls), f"a key without a bounded TTL: {ttls}"
        windows = [t for k, t in zip(keys, ttls, strict=True) if not k.startswith((prefix + "s:").encode())]
        assert max(windows) <= 86400 + 7200, f"a window outlives its day and one bucket: {max(windows)}"
        await r.delete(*keys)
        await r.aclose()
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_killed_mid_run_applies_the_fail_mode(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """A private redis-server is killed (SIGKILL) mid-run: fail-open keeps deciding on lists (counters at 0),
    fail-closed denies with ``risk_unavailable``; both are marked degraded and /metrics shows the backend down."""
    with private_redis() as (url, proc):
        state = redis_state(f"pw:test:{uuid.uuid4().hex}:", url)
        engine = RiskEngine(state=state, fail={"payment": mode}, lists=RiskLists(deny=["0xdead"]))
        try:
            before = await engine.check(event("payment"))
            proc.kill()
            proc.wait()
            during = await engine.check(event("payment"))
            listed = await engine.check(event("payment", payer="0xDEAD"))
        finally:
            await state.aclose()
    assert (before.action, before.degraded) == ("allow", False), before
    assert during.degraded, during
    assert "paywire_risk_backend_up 0" in engine.metrics.render(), engine.metrics.render()
    assert 'paywire_risk_degraded_total{checkpoint="payment"} 2' in engine.metrics.render()
    outage = [r for r in caplog.records if "state backend unavailable" in r.getMessage()]
    assert len(outage) == 1, f"the outage should be logged once, got {[r.getMessage() for r in outage]}"
    assert f"'payment': '{mode}'" in outage[0].getMessage(), outage[0].getMessage()
    if mode == "open":
        assert during.action == "allow", during
        assert (listed.action, listed.rule) == ("deny", "denylisted_payer"), "lists must hold during an outage"
    else:
        assert (during.action, during.reason) == ("deny", "risk_unavailable"), during


async def test_engine_recovers_when_redis_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    """After an outage the next decision that reaches Redis is counted again, the gauge returns to 1 and the log
    says the backend is back."""
    async with redis_proxy() as (url, server, writers):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        state = redis_state(f"pw:test:{uuid.uuid4().hex}:", url)
        engine = RiskEngine(state=state)
        try:
            await engine.check(event("payment", payer="0xAB"))
            kill(server, writers)
            down = await engine.check(event("payment", payer="0xAB"))

            async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
                ur, uw = await asyncio.open_connection("127.0.0.1", 6379)

                async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    with contextlib.suppress(Exception):
                        while data := await r.read(65536):
                            w.write(data)
                            await w.drain()
                    w.close()

                await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

            again = await asyncio.start_server(relay, "127.0.0.1", port)
            try:
                back = await engine.check(event("payment", payer="0xAB"))
            finally:
                again.close()
        finally:
            await state.aclose()
    assert down.degraded, down
    assert not back.degraded, back
    assert back.features["payer_count_1m"] == 2, "the counts did not resume where they were"
    assert "paywire_risk_backend_up 1" in engine.metrics.render()
    assert any("state backend is back" in r.getMessage() for r in caplog.records), "recovery not logged"


async def test_only_counters_the_rules_read_are_kept_unless_count_all() -> None:
    rules = parse_rules(one_rule("payment", "deny", "payer_count_1m > 100"))
    lean, full = RiskEngine(rules), RiskEngine(rules, count_all=True)
    for _ in range(2):
        a = await lean.check(event("payment"))
        b = await full.check(event("payment"))
    assert a.features["payer_count_1m"] == 2, a.features["payer_count_1m"]
    assert a.features["payee_count_1m"] == 0, "a counter no rule reads was kept"
    assert b.features["payee_count_1m"] == 2, "count_all did not keep every counter"


def rules_of(*rules: tuple[str, str]) -> str:
    """A rule file: one deny rule per (checkpoint, condition), ids r1, r2 …"""
    return "".join(one_rule(cp, "deny", when).replace('"r1"', f'"r{i + 1}"') for i, (cp, when) in enumerate(rules))


@contextlib.asynccontextmanager
async def state_of(kind: str) -> AsyncIterator[object]:
    if kind == "memory":
        yield MemoryState()
        return
    state = redis_state(f"pw:test:{uuid.uuid4().hex}:")
    try:
        yield state
    finally:
        await state.aclose()


async def test_a_window_no_rule_reads_is_not_kept_unless_count_all() -> None:
    rules = parse_rules(one_rule("payment", "deny", "payer_count_1m > 100"))
    lean, full = RiskEngine(rules), RiskEngine(rules, count_all=True)
    for _ in range(2):
        a = await lean.check(event("payment"))
        b = await full.check(event("payment"))
    assert a.features["payer_count_1m"] == 2, a.features
    assert (a.features["payer_count_1h"], a.features["payer_sum_1m"]) == (0, 0), "an unread window or sum was kept"
    assert (b.features["payer_count_1h"], b.features["payer_sum_1m"]) == (2, pytest.approx(0.02)), b.features


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_rule_reading_one_window_sees_its_counts_and_sums(kind: str) -> None:
    clock = Clock()
    rules = parse_rules(rules_of(("payment", "payer_count_1h > 3"), ("payment", "payer_sum_1h > 100.0")))
    async with state_of(kind) as state:
        engine = RiskEngine(rules, state=state, clock=clock)  # type: ignore[arg-type]
        actions = []
        for _ in range(5):
            actions.append((await engine.check(event("payment"))).action)
            clock.t += 61  # past the one-minute window each time: the hour keeps counting
        assert actions == ["allow"] * 3 + ["deny"] * 2, actions
        d = await engine.check(event("payment"))
        assert (d.features["payer_count_1h"], d.features["payer_sum_1h"]) == (6, pytest.approx(0.06)), d.features
        assert d.features["payer_count_1m"] == 0, "a window no rule reads was counted"
        clock.t += 3600 + 300 + 1  # the hour slid past every payment
        assert (await engine.check(event("payment"))).features["payer_count_1h"] == 1


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_new_rules_reading_another_window_start_counting_it(kind: str) -> None:
    clock = Clock()
    async with state_of(kind) as state:
        engine = RiskEngine(parse_rules(rules_of(("payment", "payer_count_1m > 100"))), state=state,
                            clock=clock)  # type: ignore[arg-type]
        for _ in range(3):
            await engine.check(event("payment"))
        engine.rules = parse_rules(rules_of(("payment", "payer_count_1m > 100"), ("payment", "payer_count_1h > 1")))
        d = await engine.check(event("payment"))
        assert d.features["payer_count_1m"] == 4, "the window both rule sets read lost its counts"
        assert d.features["payer_count_1h"] == 1, "the newly read window does not count from the reload on"
        assert (await engine.check(event("payment"))).rule == "r2", "the new rule does not see the new window"
        # a second engine on the same counters with the first rules: the windows they share stay one count
        if kind == "redis":
            other = RiskEngine(parse_rules(rules_of(("payment", "payer_count_1m > 100"))), state=state,
                               clock=clock)  # type: ignore[arg-type]
            assert (await other.check(event("payment"))).features["payer_count_1m"] == 6
            assert (await engine.check(event("payment"))).features["payer_count_1h"] == 3, \
                "another rule set's engine wiped this one's window"


async def test_a_counter_two_checkpoints_share_keeps_the_windows_either_reads() -> None:
    rules = parse_rules(rules_of(("payment", "payer_count_1m > 100"), ("settle", "payer_count_1h > 100")))
    engine = RiskEngine(rules)
    for _ in range(2):
        await engine.check(event("payment"))
    d = await engine.check(event("settle"))
    assert d.features["payer_count_1h"] == 3, "the settle checkpoint missed the payments' counts in its window"


# ------------------------------------------------------------------------------------------------ kinds, stats


@pytest.mark.parametrize(("reason", "kind"), [
    ("invalid_exact_evm_nonce_already_used", "replays"),
    ("invalid_exact_evm_payload_authorization_valid_before", "expired"),
    ("invalid_exact_evm_payload_authorization_value", "underpaid"),
    ("invalid_exact_evm_payload_signature", "invalid"),
    ("invalid_exact_evm_insufficient_balance", "invalid"),
    ("replays", "replays"),
])
async def test_failures_are_split_by_kind(reason: str, kind: str) -> None:
    engine = RiskEngine(count_all=True)
    await engine.note_failure(event("payment", payer="0xD2"), reason)
    d = await engine.check(event("payment", payer="0xD2"))
    counts = {k: d.features[f"payer_{k}_1h"] for k in ("invalid", "replays", "underpaid", "expired")}
    assert counts == {k: int(k == kind) for k in counts}, counts
    assert (d.features["payer_failures_1h"], d.features["ip_failures_1m"]) == (1, 1), d.features


async def amount_stats(state: object) -> None:
    clock = Clock()
    rules = parse_rules(one_rule("payment", "review", "route_amount_samples >= 100 && amount_vs_p99 > 10.0"))
    engine = RiskEngine(rules, state=state, clock=clock)  # type: ignore[arg-type]
    for i in range(200):  # 198 payments of 0.01 and two of 0.05: the p99 is the 0.01 bin
        await engine.note_amount(event("payment", amount=50_000 if i in (10, 20) else 10_000))
    usual = await engine.check(event("payment", amount=20_000))
    odd = await engine.check(event("payment", amount=1_000_000))
    f = usual.features
    assert f["route_amount_samples"] == 200, f
    assert f["route_amount_mean"] == pytest.approx((198 * 0.01 + 2 * 0.05) / 200), f
    assert 0.01 <= f["route_amount_p99"] <= 0.01 * 2 ** 0.25, f["route_amount_p99"]
    assert usual.action == "allow" and (odd.action, odd.rule) == ("review", "r1"), (usual, odd)
    clock.t += 86400 + 7200 + 1  # the day slid past: the history is gone
    assert (await engine.check(event("payment"))).features["route_amount_samples"] == 0


async def test_route_amount_statistics_in_process() -> None:
    await amount_stats(MemoryState())


async def test_route_amount_statistics_in_redis() -> None:
    state = redis_state(f"pw:test:{uuid.uuid4().hex}:")
    try:
        await amount_stats(state)
    finally:
        await state.aclose()


# ------------------------------------------------------------------------------------------------ SQL lists


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_allow_and_deny_lists_in_the_sql_store(backend: str, request: pytest.FixtureRequest) -> None:
    """Lists kept in SQLite or PostgreSQL: an engine picks up an entry added while it runs (no restart), the
    list version in its decisions changes, and a removed entry stops applying."""
    from paywire.store.risk import RiskListStore

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    store = await RiskListStore.open(url)
    tick = Clock(0.0)
    try:
        lists = RiskLists(store=store, store_every=5.0, clock=tick)
        engine = RiskEngine(lists=lists, sample_allows=0)
        first = await engine.check(event("payment", payer="0xBAD"))
        assert await store.add("deny", "0xBaD", note="chargebacks")
        assert not await store.add("deny", "0xbad"), "a duplicate entry was added"
        await store.add("allow", "198.51.100.200")
        tick.t += 5
        denied = await engine.check(event("payment", payer="0xBAD"))
        allowed = await engine.check(event("request", ip="198.51.100.200"))
        await store.remove("deny", "0xbad")
        tick.t += 5
        again = await engine.check(event("payment", payer="0xBAD"))
        assert [e.value for e in await store.entries("deny")] == []
    finally:
        await store.aclose()
    assert first.action == "allow", first
    assert (denied.action, denied.rule) == ("deny", "denylisted_payer"), denied
    assert (allowed.action, allowed.rule) == ("allow", "allowlisted"), allowed
    assert denied.list_version != first.list_version and "sql:" in denied.list_version, denied.list_version
    assert again.action == "allow", again


async def test_an_unreadable_list_store_keeps_the_last_lists(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    from paywire.store.risk import RiskListStore

    store = await RiskListStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    await store.add("deny", "0xbad")
    tick = Clock(0.0)
    engine = RiskEngine(lists=RiskLists(store=store, clock=tick), sample_allows=0)
    assert (await engine.check(event("payment", payer="0xbad"))).action == "deny"
    await store.aclose()  # the database goes away
    tick.t += 10
    d = await engine.check(event("payment", payer="0xbad"))
    assert (d.action, d.rule) == ("deny", "denylisted_payer"), d
    assert any("unreadable" in r.getMessage() for r in caplog.records)


async def test_lists_given_in_code_can_be_replaced_while_running() -> None:
    engine = RiskEngine(sample_allows=0)
    assert (await engine.check(event("payment", payer="0xBAD"))).action == "allow"
    engine.lists.deny = ["0xbad"]
    d = await engine.check(event("payment", payer="0xBAD"))
    assert (d.action, d.rule) == ("deny", "denylisted_payer"), d


async def test_a_forger_naming_an_allowlisted_payer_still_meets_the_failure_storm() -> None:
    """Before verify the payer is only claimed: the allow list must not let a failing IP through."""
    engine = RiskEngine(lists=RiskLists(allow=["0xa11"]), sample_allows=0)
    for _ in range(5):
        await engine.note_failure(event("payment", payer="0xA11"), "invalid_exact_evm_payload_signature")
    d = await engine.check(event("payment", payer="0xA11"))
    assert (d.action, d.rule) == ("deny", "failure_storm"), d


async def test_records_leave_out_features_no_rule_measured_and_a_replay_names_them() -> None:
    """Unread windows are not counted, so a record must not present their defaults as measured zeros; a replay
    of rules that read them says they were not recorded."""
    from paywire.risk.replay import replay

    class Keep:
        def __init__(self) -> None:
            self.records: list[dict[str, object]] = []

        async def record(self, decision: object, event: Event) -> None:
            self.records.append({"checkpoint": decision.checkpoint, "action": decision.action,  # type: ignore[attr-defined]
                                 "features": dict(decision.features)})  # type: ignore[attr-defined]

    rules = parse_rules(one_rule("payment", "deny", "payer_count_1m >= 2"))
    lean, full = Keep(), Keep()
    for recorder, count_all in ((lean, False), (full, True)):
        engine = RiskEngine(rules, recorder=recorder, sample_allows=0.0, count_all=count_all)
        for _ in range(2):
            await engine.check(event("payment"))
    rec, rec_all = lean.records[-1], full.records[-1]
    assert rec["action"] == "deny" and rec["features"]["payer_count_1m"] == 2, rec  # type: ignore[index]
    assert "payer_count_1h" not in rec["features"] and "payer_sum_1m" not in rec["features"], rec  # type: ignore[operator]
    assert rec["features"]["amount"] == pytest.approx(0.01), "event values are always recorded"  # type: ignore[index]
    assert rec_all["features"]["payer_count_1h"] == 2, "count_all records every feature"  # type: ignore[index]
    other = parse_rules(one_rule("payment", "deny", "payer_count_1h >= 2"))
    assert replay(other, lean.records).unrecorded == {"payer_count_1h": 1}
    assert not replay(other, full.records).unrecorded and replay(other, full.records).changes[("deny", "deny")] == 1
