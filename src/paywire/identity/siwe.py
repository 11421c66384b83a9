"""EIP-4361 (Sign-In with Ethereum) messages: format, and a strict parser (sans-I/O).

The message is what an EVM wallet signs with ``personal_sign`` (EIP-191) for the x402 ``sign-in-with-x``
extension. :func:`format_message` builds the exact text; :func:`parse_message` reads one back and refuses
anything that is not the grammar's shape (extra lines, bad timestamps, an address with a wrong EIP-55
checksum, an unknown version). :func:`personal_sign_digest` is the 32-byte hash the wallet signs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from paywire.errors import WireError
from paywire.evm.crypto import keccak256, to_checksum

HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_DOMAIN = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?")  # host[:port] (EIP-4361 authority, no userinfo)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s]*")
MAX_MESSAGE = 8192


class SiweError(WireError):
    """A message that is not EIP-4361."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_siwe_message", detail)


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp (with a zone) as POSIX seconds; ``SiweError`` otherwise. The canonical form
    (:func:`format_time`'s) takes a fast path whose seconds are converted once per distinct second."""
    if isinstance(text, str) and len(text) == 24:
        m = _CANONICAL.fullmatch(text)
        if m is not None:
            head = m.group(1)
            seconds = _SECONDS.get(head)
            if seconds is None:
                seconds = _slow_seconds(head + "Z", text)  # may raise (Feb 30): nothing is cached then
                if len(_SECONDS) >= 4096:
                    _SECONDS.clear()
                _SECONDS[head] = seconds
            return (seconds * 1_000_000 + int(m.group(2)) * 1000) / 1_000_000  # as timedelta.total_seconds()
    if not isinstance(text, str) or _RFC3339.fullmatch(text) is None:
        raise SiweError(f"not an RFC 3339 timestamp: {str(text)[:40]!r}")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SiweError(f"not a valid date: {text[:40]!r}") from None


def canonical_time(text: object) -> float | None:
    """:func:`parse_time` of a timestamp in :func:`format_time`'s form that is a real date, else None (the
    caller then asks :func:`parse_time`, which says what is wrong)."""
    m = _CANONICAL.fullmatch(text) if isinstance(text, str) and len(text) == 24 else None
    if m is None:
        return None
    seconds = _SECONDS.get(m.group(1))
    if seconds is None:
        try:
            return parse_time(m.string)
        except SiweError:
            return None
    return (seconds * 1_000_000 + int(m.group(2)) * 1000) / 1_000_000


def _slow_seconds(text: str, original: str) -> int:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise SiweError(f"not a valid date: {original[:40]!r}") from None


_CANONICAL = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})\.([0-9]{3})Z")
_SECONDS: dict[str, int] = {}  # "2026-12-03T10:30:00" -> POSIX seconds (bounded)
_PREFIXES: dict[int, str] = {}  # POSIX seconds -> "2026-12-03T10:30:00." (bounded)


def format_time(ts: float) -> str:
    """POSIX seconds as ``2026-12-03T10:30:00.000Z`` (milliseconds truncated)."""
    seconds, ms = divmod(int(ts * 1000), 1000)
    prefix = _PREFIXES.get(seconds)
    if prefix is None:
        if len(_PREFIXES) >= 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[seconds] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{prefix}{ms:03d}Z"


@dataclass(frozen=True, slots=True)
class SiweMessage:
    """The fields of an EIP-4361 message (``chain_id`` is the number, as in the message)."""

    domain: str
    address: str
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: str
    statement: str | None = None
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None

    def text(self) -> str:
        """The exact text a wallet signs."""
        prefix = f"{self.domain}{HEADER_SUFFIX}\n{self.address}"
        prefix = f"{prefix}\n\n{self.statement}" if self.statement is not None else prefix + "\n"
        lines = [f"URI: {self.uri}", f"Version: {self.version}", f"Chain ID: {self.chain_id}",
                 f"Nonce: {self.nonce}", f"Issued At: {self.issued_at}"]
        if self.expiration_time:
            lines.append(f"Expiration Time: {self.expiration_time}")
        if self.not_before:
            lines.append(f"Not Before: {self.not_before}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources is not None:
            lines.append("\n".join(["Resources:", *(f"- {r}" for r in self.resources)]))
        return f"{prefix}\n\n" + "\n".join(lines)

    def check(self, *, dates: bool = True) -> SiweMessage:
        """Raise ``SiweError`` unless every field has the grammar's shape; returns self. ``dates=False`` checks
        the timestamps' shape only (the caller converts them itself, and so sees invalid dates)."""
        if _DOMAIN.fullmatch(self.domain) is None:
            raise SiweError(f"bad domain {self.domain[:80]!r}")
        if _ADDRESS.fullmatch(self.address) is None:
            raise SiweError("the address is not 0x and 40 hex digits")
        hexpart = self.address[2:]
        if hexpart not in (hexpart.lower(), hexpart.upper()) and to_checksum(self.address) != self.address:
            raise SiweError("the address has a wrong EIP-55 checksum")
        if self.statement is not None and ("\n" in self.statement or "\r" in self.statement):
            raise SiweError("the statement must be one line")
        if _URI.fullmatch(self.uri) is None:
            raise SiweError(f"bad URI {self.uri[:80]!r}")
        if self.version != "1":
            raise SiweError(f"version must be 1, not {self.version[:10]!r}")
        if not (isinstance(self.chain_id, int) and 0 < self.chain_id < 2**256):
            raise SiweError("bad chain id")
        if _NONCE.fullmatch(self.nonce) is None:
            raise SiweError("the nonce must be 8+ letters and digits")
        for value in (self.issued_at, self.expiration_time, self.not_before):
            if value is not None:
                if dates:
                    parse_time(value)
                elif not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
                    raise SiweError(f"not an RFC 3339 timestamp: {str(value)[:40]!r}")
        if self.request_id is not None and ("\n" in self.request_id or "\r" in self.request_id):
            raise SiweError("the request id must be one line")
        for r in self.resources or ():
            if _URI.fullmatch(r) is None:
                raise SiweError(f"bad resource URI {r[:80]!r}")
        return self


_FIELDS = (("URI", "uri"), ("Version", "version"), ("Chain ID", "chain_id"), ("Nonce", "nonce"),
           ("Issued At", "issued_at"), ("Expiration Time", "expiration_time"), ("Not Before", "not_before"),
           ("Request ID", "request_id"))
_REQUIRED = ("uri", "version", "chain_id", "nonce", "issued_at")


def parse_message(text: str) -> SiweMessage:
    """Read an EIP-4361 message strictly (fields in the grammar's order, nothing extra); ``SiweError``."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE or "\r" in text:
        raise SiweError("not a message of at most 8 KiB without CR")
    lines = text.split("\n")
    if len(lines) < 7 or not lines[0].endswith(HEADER_SUFFIX) or lines[2] != "":
        raise SiweError("missing the 'wants you to sign in with your Ethereum account:' header")
    domain, address = lines[0][: -len(HEADER_SUFFIX)], lines[1]
    if "://" in domain:
        raise SiweError("a scheme before the domain is not accepted")
    i = 3
    statement: str | None = None
    if lines[i] != "":
        statement, i = lines[i], i + 1
        if lines[i] != "":
            raise SiweError("the statement must be followed by an empty line")
    i += 1
    values: dict[str, str] = {}
    order = 0
    resources: tuple[str, ...] | None = None
    while i < len(lines):
        line = lines[i]
        if line == "Resources:":
            resources = tuple(x[2:] for x in lines[i + 1:])
            if not all(x.startswith("- ") for x in lines[i + 1:]):
                raise SiweError("every line after 'Resources:' must be '- <uri>'")
            break
        for j, (label, name) in enumerate(_FIELDS[order:], start=order):
            if line.startswith(f"{label}: "):
                values[name], order = line[len(label) + 2:], j + 1
                break
        else:
            raise SiweError(f"unexpected line {line[:60]!r}")
        i += 1
    missing = [n for n in _REQUIRED if n not in values]
    if missing:
        raise SiweError(f"missing {', '.join(missing)}")
    chain = values["chain_id"]
    if not chain.isdigit() or chain.startswith("0"):
        raise SiweError("bad chain id")
    msg = SiweMessage(domain, address, values["uri"], values["version"], int(chain), values["nonce"],
                      values["issued_at"], statement, values.get("expiration_time"), values.get("not_before"),
                      values.get("request_id"), resources).check()
    if msg.text() != text:
        raise SiweError("the message is not in canonical form")
    return msg


def personal_sign_digest(text: str) -> bytes:
    """EIP-191 version 0x45 (``personal_sign``) hash of a message."""
    data = text.encode()
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


__all__ = ["SiweError", "SiweMessage", "canonical_time", "format_time", "parse_message", "parse_time", "personal_sign_digest"]
