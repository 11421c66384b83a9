"""Agent key directories for the seller: fetched over HTTPS, cached, and guarded against SSRF.

An agent names its directory in ``Signature-Agent`` (a URL we did not choose), so fetching it is a request an
attacker can aim. :class:`AgentDirectories` resolves the host first and refuses private, loopback, link-local
and other non-public addresses (unless ``allow_private``, for development), connects to the address it checked
(no second lookup for DNS rebinding to change), follows no redirects, reads at most ``max_bytes`` within
``timeout`` seconds, and caches keys for ``ttl`` seconds (failures for ``fail_ttl``, so one bad directory
cannot make every request wait).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
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


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
        import httpx

        parts = urlsplit(agent)
        host, scheme = parts.hostname, parts.scheme
        if not host or scheme not in ("https", "http") or parts.username or parts.password:
            raise DirectoryError("agent_directory_refused", f"not an http(s) agent URL: {agent[:100]!r}")
        if scheme == "http" and not self.allow_private:
            raise DirectoryError("agent_directory_refused", "agent directories are fetched over https only")
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            async with asyncio.timeout(self.timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise DirectoryError("agent_directory_unreachable", f"cannot resolve {host}: {exc}") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses or (not self.allow_private and not all(_public(a) for a in addresses)):
            raise DirectoryError("agent_directory_refused",
                                 f"{host} resolves to a private or loopback address: refused")
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        url = f"{scheme}://{netloc}:{port}{DIRECTORY_PATH}"
        headers = {"host": parts.netloc, "accept": "application/http-message-signatures-directory+json"}
        body = bytearray()
        try:
            async with asyncio.timeout(self.timeout), httpx.AsyncClient(follow_redirects=False) as client:
                extensions = {"sni_hostname": host} if scheme == "https" else {}
                async with client.stream("GET", url, headers=headers, extensions=extensions) as r:
                    if r.status_code != 200:
                        raise DirectoryError("agent_directory_refused",
                                             f"{agent}'s directory answered {r.status_code} (redirects are not followed)")
                    async for chunk in r.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise DirectoryError("agent_directory_too_large",
                                                 f"{agent}'s directory is larger than {self.max_bytes} bytes")
        except TimeoutError:
            raise DirectoryError("agent_directory_unreachable",
                                 f"{agent}'s directory did not answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise DirectoryError("agent_directory_unreachable", f"{agent}'s directory: {exc}") from None
        try:
            return parse_directory(bytes(body))
        except (ValueError, TypeError) as exc:
            raise DirectoryError("agent_directory_invalid", f"{agent}'s directory: {exc}") from None


__all__ = ["AgentDirectories", "DirectoryError"]
