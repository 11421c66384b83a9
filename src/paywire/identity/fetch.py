"""One guarded HTTP GET for documents a stranger names (agent key directories, ``did:web`` documents).

The URL comes from a request we did not choose, so fetching it is a request an attacker can aim.
:func:`guarded_get` resolves the host first and refuses private, loopback, link-local and other non-public
addresses (unless ``allow_private``, for development, which also allows plain http), connects to the address it
checked (no second lookup for DNS rebinding to change), follows no redirects, and reads at most ``max_bytes``
within ``timeout`` seconds. ``httpx`` is imported when first used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class FetchError(Exception):
    """The document could not be fetched; ``kind`` says why: ``refused`` | ``too_large`` | ``unreachable``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def public_address(address: str) -> bool:
    """Whether an IP address is a public unicast one (IPv4-mapped IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def guarded_get(url: str, *, allow_private: bool = False, timeout: float = 3.0, max_bytes: int = 64 * 1024,
                      accept: str = "application/json", what: str = "the document") -> bytes:
    """The body of a 200 answer to ``GET url`` under the rules above; :class:`FetchError` otherwise."""
    import httpx

    parts = urlsplit(url)
    host, scheme = parts.hostname, parts.scheme
    if not host or scheme not in ("https", "http") or parts.username or parts.password:
        raise FetchError("refused", f"not an http(s) URL: {url[:100]!r}")
    if scheme == "http" and not allow_private:
        raise FetchError("refused", f"{what} is fetched over https only")
    port = parts.port or (443 if scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise FetchError("unreachable", f"cannot resolve {host}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or (not allow_private and not all(public_address(a) for a in addresses)):
        raise FetchError("refused", f"{host} resolves to a private or loopback address: refused")
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    target = f"{scheme}://{netloc}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
    headers = {"host": parts.netloc, "accept": accept}
    body = bytearray()
    try:
        async with asyncio.timeout(timeout), httpx.AsyncClient(follow_redirects=False) as client:
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            async with client.stream("GET", target, headers=headers, extensions=extensions) as r:
                if r.status_code != 200:
                    raise FetchError("refused", f"{what} answered {r.status_code} (redirects are not followed)")
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError("too_large", f"{what} is larger than {max_bytes} bytes")
    except TimeoutError:
        raise FetchError("unreachable", f"{what} did not answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise FetchError("unreachable", f"{what}: {exc}") from None
    return bytes(body)


__all__ = ["FetchError", "guarded_get", "public_address"]
