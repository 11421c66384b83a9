"""Agent key directories for the seller: fetched over HTTPS, cached, and guarded against SSRF.

An agent names its directory in ``Signature-Agent`` (a URL we did not choose), so fetching it is a request an
attacker can aim: :class:`AgentDirectories` fetches with :func:`paywire.identity.fetch.guarded_get` (public
addresses only unless ``allow_private``, the checked address pinned, no redirects, ``max_bytes`` within
``timeout`` seconds), and caches keys for ``ttl`` seconds (failures for ``fail_ttl``, so one bad directory
cannot make every request wait).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from paywire.identity.agent import DIRECTORY_PATH, parse_directory


class DirectoryError(Exception):
    """The directory could not be used; ``code`` says why (``agent_directory_*``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class AgentDirectories:
    """keyid lookups in agents' directories (``https://agent.example`` → its JWKS), cached."""

    allow_private: bool = False
    ttl: float = 300.0
    fail_ttl: float = 30.0
    timeout: float = 3.0
    max_bytes: int = 64 * 1024
    max_entries: int = 4096
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, dict[str, bytes] | DirectoryError]] = field(default_factory=dict, repr=False)
    _pending: dict[str, asyncio.Future[dict[str, bytes]]] = field(default_factory=dict, repr=False)

    async def key(self, agent: str, keyid: str) -> bytes:
        """The Ed25519 public key ``keyid`` in ``agent``'s directory; ``DirectoryError`` when it has none."""
        keys = await self.keys(agent)
        found = keys.get(keyid)
        if found is None:
            raise DirectoryError("agent_key_unknown", f"{agent}'s directory has no key {keyid[:60]!r}")
        return found

    async def keys(self, agent: str) -> dict[str, bytes]:
        now = self.clock()
        hit = self._cache.get(agent)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], DirectoryError):
                raise hit[1]
            return hit[1]
        pending = self._pending.get(agent)
        if pending is not None:  # one fetch per directory at a time
            return await asyncio.shield(pending)
        fut: asyncio.Future[dict[str, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[agent] = fut
        try:
            keys = await self._fetch(agent)
        except DirectoryError as exc:
            self._remember(agent, now + self.fail_ttl, exc)
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._pending.pop(agent, None)
        self._remember(agent, now + self.ttl, keys)
        fut.set_result(keys)
        return keys

    def _remember(self, agent: str, until: float, value: dict[str, bytes] | DirectoryError) -> None:
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[agent] = (until, value)

    async def _fetch(self, agent: str) -> dict[str, bytes]:
        from paywire.identity.fetch import FetchError, guarded_get

        try:
            parts = urlsplit(agent)
            body = await guarded_get(f"{parts.scheme}://{parts.netloc}{DIRECTORY_PATH}",
                                     allow_private=self.allow_private, timeout=self.timeout,
                                     max_bytes=self.max_bytes, what=f"{agent}'s directory",
                                     accept="application/http-message-signatures-directory+json")
        except FetchError as exc:
            raise DirectoryError(f"agent_directory_{exc.kind}", str(exc)) from None
        try:
            return parse_directory(body)
        except (ValueError, TypeError) as exc:
            raise DirectoryError("agent_directory_invalid", f"{agent}'s directory: {exc}") from None


__all__ = ["AgentDirectories", "DirectoryError"]
