"""The Redis backend: counters shared by a fleet (every seller replica, every facilitator).

One Lua script per decision does everything atomically on the server — first-seen ``SET NX``, bump the current
bucket (``HINCRBY`` / ``HINCRBYFLOAT``), drop expired buckets, read the windows — so two replicas see one
count. Each counter is one hash holding, per window it keeps (those some rule reads), at most
:data:`~paywire.risk.features.BUCKETS` live buckets (``<window>c<bucket>`` counts, ``<window>s<bucket>`` sums,
the sums only when a rule reads them), with a TTL of the longest window plus one bucket; first-seen keys expire
after ``first_seen_ttl``: nothing grows without bound. A rule that changes the windows simply lets the old
buckets expire (they are dropped on the next read); a window a rule starts reading counts from then on.
A route's (payee's) amount histogram is one more hash (``<slice>:<bin>`` counts, ``<slice>:s`` sums, 12 time
slices of the longest window, with a TTL), read by the same script and added to after an outcome.
Times come from the caller's clock (keep the fleet's clocks in sync, as for anything else with expiries).

Needs the ``redis`` package (``pip install paywire[risk]``). A refused connection or a timeout raises
:class:`~paywire.risk.state.StateUnavailable` after ``timeout`` seconds at most.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from typing import Any

from paywire.risk.features import BUCKETS, Counter, Observed, Plan, amount_bin, summarize
from paywire.risk.state import StateUnavailable

SCRIPT = """
local head, spec = {}, {}  -- two packed arguments (a few bytes to send instead of dozens of arguments)
for x in string.gmatch(ARGV[1], '%S+') do head[#head + 1] = x end
for x in string.gmatch(ARGV[2], '%S+') do spec[#spec + 1] = x end
local now = tonumber(head[1])
local nw = tonumber(head[2])
local ttl_seen = tonumber(head[3])
local flags = tonumber(head[4])
local has_seen = flags % 2
local has_stats = math.floor(flags / 2)
local nb = tonumber(head[5])
local names, current, oldest = {}, {}, {}
local longest = 0
for i = 1, nw do
  local w = tonumber(head[5 + i])
  names[i] = head[5 + i]
  current[i] = math.floor(now * nb / w)
  oldest[names[i]] = current[i] - nb
  if w > longest then longest = w end
end
local ttl = math.ceil(longest + longest / nb)
local out = {}
local isnew = 0
local ki = 1
local age = '-1'
if has_seen == 1 then
  ki = 2
  local v = redis.call('GET', KEYS[1])
  if v then
    age = tostring(now - tonumber(v))
  else
    isnew = 1
    redis.call('SET', KEYS[1], tostring(now), 'EX', ttl_seen)
  end
end
out[1] = age
local a = 1
for c = 0, #KEYS - ki - has_stats do
  local key = KEYS[ki + c]
  local inc = tonumber(spec[a])
  local amt = spec[a + 1]
  if spec[a + 2] == '1' and isnew == 0 then inc = 0 end
  local mask = tonumber(spec[a + 3])  -- bit i - 1: the counter keeps window i (the windows some rule reads)
  a = a + 4
  local kept, cnt, sum = {}, {}, {}
  for w = 1, nw do
    if mask % 2 == 1 then
      kept[#kept + 1] = w
      cnt[names[w]] = 0
      sum[names[w]] = 0
    end
    mask = math.floor(mask / 2)
  end
  if inc ~= 0 and #kept > 0 then
    local summing = tonumber(amt) ~= 0
    for _, w in ipairs(kept) do
      redis.call('HINCRBY', key, names[w] .. 'c' .. current[w], inc)
      if summing then redis.call('HINCRBYFLOAT', key, names[w] .. 's' .. current[w], amt) end
    end
    redis.call('EXPIRE', key, ttl)
  end
  local fields = redis.call('HGETALL', key)
  local dead = {}
  for j = 1, #fields, 2 do
    local w, kind, b = string.match(fields[j], '^(%d+)([cs])(%-?%d+)$')
    local low = oldest[w]
    if low == nil or tonumber(b) <= low then  -- expired, or a window the engine no longer has
      dead[#dead + 1] = fields[j]
    elseif cnt[w] ~= nil then  -- a window another rule set keeps is left alone (a fleet mid-deploy)
      if kind == 'c' then cnt[w] = cnt[w] + tonumber(fields[j + 1]) else sum[w] = sum[w] + tonumber(fields[j + 1]) end
    end
  end
  if #dead > 0 then redis.call('HDEL', key, unpack(dead)) end
  for _, w in ipairs(kept) do
    out[#out + 1] = cnt[names[w]]
    out[#out + 1] = tostring(sum[names[w]])
  end
end
if has_stats == 1 then  -- the amount histogram: live slices' fields, expired ones dropped
  local skey = KEYS[#KEYS]
  local low = tonumber(head[6 + nw])
  local fields = redis.call('HGETALL', skey)
  for j = 1, #fields, 2 do
    local t = tonumber(string.match(fields[j], '^(%-?%d+):'))
    if t == nil or t <= low then
      redis.call('HDEL', skey, fields[j])
    else
      out[#out + 1] = fields[j]
      out[#out + 1] = fields[j + 1]
    end
  end
end
return table.concat(out, ' ')  -- one bulk reply: the client parses one string, not a reply per number
"""

STATS_ADD = """
redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 1)
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1] .. ':s', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""
"""Amount histograms: one hash per route (payee) of ``<slice>:<bin>`` counts and ``<slice>:s`` sums."""
def _histogram(cells: Sequence[Any]) -> tuple[int, float, float]:
    bins: dict[int, int] = {}
    total = 0.0
    for j in range(0, len(cells), 2):
        name = cells[j].decode() if isinstance(cells[j], bytes) else str(cells[j])
        _, b = name.split(":", 1)
        if b == "s":
            total += float(cells[j + 1])
        else:
            bins[int(b)] = bins.get(int(b), 0) + int(cells[j + 1])
    return summarize(bins, total)


@functools.lru_cache(maxsize=256)
def _mask(widths: tuple[int, ...], windows: tuple[int, ...]) -> int:
    """The windows a counter keeps as bits of the engine's windows (bit i: ``windows[i]``)."""
    return sum(1 << i for i, w in enumerate(windows) if w in widths)


def _safe(key: str) -> str:
    """Keys carry request values (IPs, agent names): long ones are hashed so a key stays small."""
    return key if len(key) <= 160 else key[:40] + "#" + hashlib.sha256(key.encode()).hexdigest()


class RedisState:
    """Counters in Redis at ``url`` (``redis://127.0.0.1:6379/0``) under ``prefix``."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "pw:risk:", timeout: float = 0.25,
                 first_seen_ttl: int = 30 * 86400, client: Any = None) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:  # pragma: no cover - depends on the install
            from paywire.risk.model import RiskConfigError

            raise RiskConfigError("the Redis risk backend needs the redis package: "
                                  "pip install 'paywire[risk]'") from None
        self.url, self.prefix, self.first_seen_ttl = url, prefix, first_seen_ttl
        self._errors: tuple[type[BaseException], ...] = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)
        self._redis = client or aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                                        retry_on_timeout=False)
        self._script = self._redis.register_script(SCRIPT)
        self._stats_add = self._redis.register_script(STATS_ADD)

    async def _run(self, keys: list[str], args: list[Any]) -> bytes:
        try:
            result: bytes = await self._script(keys=keys, args=args)
            return result
        except self._errors as exc:
            raise StateUnavailable(f"redis at {self.url}: {exc}") from exc

    def _args(self, counters: Sequence[Counter], windows: Sequence[int], now: float, first: str | None,
              stats: str | None = None) -> tuple[list[str], list[str]]:
        """Keys, and two arguments: the header (time, windows, flags …) and per counter ``add amount
        only_if_new windows-mask``, space-separated (redis-py encodes each argument apart: two are cheap)."""
        keys = ([_safe(self.prefix + first)] if first else []) + [_safe(self.prefix + c.key) for c in counters]
        flags = (1 if first else 0) + (2 if stats else 0)
        head = [repr(now), str(len(windows)), str(self.first_seen_ttl), str(flags), str(BUCKETS),
                *map(str, windows)]
        if stats:
            keys.append(_safe(self.prefix + stats))
            head.append(str(math.floor(now * BUCKETS / max(windows)) - BUCKETS))
        wins = tuple(windows)
        spec = " ".join(f"{c.add} {c.amount!r} {1 if c.only_if_new else 0} {_mask(c.widths, wins)}" for c in counters)
        return keys, [" ".join(head), spec]

    async def observe(self, plan: Plan, windows: Sequence[int], now: float) -> Observed:
        stats = plan.stats if windows else None
        keys, args = self._args(plan.counters, windows, now, plan.first_seen, stats)
        out = (await self._run(keys, args)).split()
        age = float(out[0])
        seen = {}
        i = 1
        for c in plan.counters:  # (count, sum) per window the counter keeps
            n = len(c.widths)
            seen[c.key] = tuple((int(float(out[j])), float(out[j + 1])) for j in range(i, i + 2 * n, 2))
            i += 2 * n
        summary = _histogram(out[i:]) if stats else (0, 0.0, 0.0)
        return Observed(seen, None if age < 0 else age, stats=summary)

    async def bump(self, counters: Sequence[Counter], windows: Sequence[int], now: float) -> None:
        if counters:
            keys, args = self._args(counters, windows, now, None)
            await self._run(keys, args)

    async def add_amount(self, key: str, amount: float, windows: Sequence[int], now: float) -> None:
        if not windows:
            return
        longest = max(windows)
        t = math.floor(now * BUCKETS / longest)
        try:
            await self._stats_add(keys=[_safe(self.prefix + key)],
                                  args=[t, amount_bin(amount), repr(amount), math.ceil(longest + longest / BUCKETS)])
        except self._errors as exc:
            raise StateUnavailable(f"redis at {self.url}: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
