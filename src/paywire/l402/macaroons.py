"""L402 macaroons on pymacaroons (V2 binary, location ``lsat``), standard padded base64 on the wire."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pymacaroons import MACAROON_V2, Macaroon, Verifier
from pymacaroons.exceptions import MacaroonException

from paywire.errors import WireError
from paywire.l402.caveats import Caveat, CaveatError
from paywire.l402.identifier import Identifier

LOCATION: Final = "lsat"
MAX_MACAROON_BYTES: Final = 16 * 1024
ROOT_KEY_LABEL: Final = b"paywire l402 root key v1\x00"


def derive_root_key(master: bytes, identifier: Identifier) -> bytes:
    """A token's root key: ``HMAC-SHA256(master, label ‖ identifier)``. Nothing per token needs storing; whoever
    holds ``master`` can mint, so it is kept like a private key."""
    return hmac.new(master, ROOT_KEY_LABEL + identifier.encode(), hashlib.sha256).digest()


def mint(identifier: Identifier, root_key: bytes, caveats: Iterable[Caveat | str] = (),
         location: str = LOCATION) -> Macaroon:
    m = Macaroon(location=location, identifier=identifier.encode(), key=root_key, version=MACAROON_V2)
    for c in caveats:
        m.add_first_party_caveat(str(c))
    return m


def attenuate(macaroon: Macaroon, caveats: Iterable[Caveat | str]) -> Macaroon:
    """A copy with more first-party caveats (anyone holding the token may narrow it)."""
    m: Macaroon = macaroon.copy()
    for c in caveats:
        m.add_first_party_caveat(str(c))
    return m


def encode(macaroon: Macaroon) -> str:
    """Standard base64 *with* padding of the V2 binary form (what aperture and the L402 spec send)."""
    raw = macaroon.serialize()
    return base64.b64encode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))).decode("ascii")


def encode_hex(macaroon: Macaroon) -> str:
    raw = macaroon.serialize()
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()


def decode(text: str) -> Macaroon:
    """Standard or URL-safe base64 (padded or not) of a V2 (or V1) macaroon; ``WireError`` when garbage."""
    if len(text) > MAX_MACAROON_BYTES:
        raise WireError("invalid_macaroon", "macaroon too large")
    t = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WireError("invalid_macaroon", "macaroon is not base64") from None
    return decode_bytes(raw)


def decode_bytes(raw: bytes) -> Macaroon:
    try:
        m = Macaroon.deserialize(base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="))
    except Exception:  # pymacaroons raises assorted errors on garbage
        raise WireError("invalid_macaroon", "not a macaroon") from None
    return m


def identifier_of(m: Macaroon) -> Identifier:
    return Identifier.decode(bytes(m.identifier_bytes))


def first_party_caveats(m: Macaroon) -> list[Caveat]:
    """Parsed caveats; a third-party caveat or an unparsable one raises ``CaveatError``."""
    out: list[Caveat] = []
    for c in m.caveats:
        if not c.first_party():
            raise CaveatError("third-party caveats are not supported")
        cid: Any = c.caveat_id
        text = cid.decode("utf-8", "replace") if isinstance(cid, bytes | bytearray) else str(cid)
        out.append(Caveat.parse(text))
    return out


def signature_ok(m: Macaroon, root_key: bytes) -> bool:
    """Recompute the HMAC chain under ``root_key`` (constant-time compare inside pymacaroons)."""
    v = Verifier()
    v.satisfy_general(lambda _c: True)  # caveat semantics are checked separately (caveats.check_caveats)
    try:
        return bool(v.verify(m, root_key))
    except (MacaroonException, ValueError, TypeError):
        return False


__all__: Sequence[str] = ["LOCATION", "attenuate", "decode", "derive_root_key", "encode", "encode_hex",
                          "first_party_caveats", "identifier_of", "mint", "signature_ok"]
