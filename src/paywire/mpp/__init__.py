"""MPP — the IETF-track ``Payment`` HTTP authentication scheme (digest §11), sans-I/O.

``MppServer`` issues ``WWW-Authenticate: Payment`` challenges (JCS request, HMAC-bound id) and judges
``Authorization: Payment`` credentials; ``redeem`` adds the method check, the single-use claim in the store
and settlement. Methods live in ``paywire.mpp.methods`` (``evm/charge``, ``lightning/charge``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.mpp.accept import PaymentRange, parse_accept_payment, rank_offers
    from paywire.mpp.b64 import b64url_decode, b64url_encode
    from paywire.mpp.challenge import Challenge, ChallengeBinder, parse_www_authenticate
    from paywire.mpp.credential import ChallengeEcho, Credential, parse_authorization
    from paywire.mpp.digest import content_digest, digest_matches
    from paywire.mpp.jcs import JcsError, canonicalize
    from paywire.mpp.problems import Problem, ProblemType
    from paywire.mpp.receipt import Receipt
    from paywire.mpp.server import Accepted, MppServer, Offer, Reply

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.mpp.accept": ("PaymentRange", "parse_accept_payment", "rank_offers"),
    "paywire.mpp.b64": ("b64url_decode", "b64url_encode"),
    "paywire.mpp.challenge": ("Challenge", "ChallengeBinder", "parse_www_authenticate"),
    "paywire.mpp.credential": ("ChallengeEcho", "Credential", "parse_authorization"),
    "paywire.mpp.digest": ("content_digest", "digest_matches"),
    "paywire.mpp.jcs": ("JcsError", "canonicalize"),
    "paywire.mpp.problems": ("Problem", "ProblemType"),
    "paywire.mpp.receipt": ("Receipt",),
    "paywire.mpp.server": ("Accepted", "MppServer", "Offer", "Reply"),
})

__all__ = [
    "Accepted",
    "Challenge",
    "ChallengeBinder",
    "ChallengeEcho",
    "Credential",
    "JcsError",
    "MppServer",
    "Offer",
    "PaymentRange",
    "Problem",
    "ProblemType",
    "Receipt",
    "Reply",
    "b64url_decode",
    "b64url_encode",
    "canonicalize",
    "content_digest",
    "digest_matches",
    "parse_accept_payment",
    "parse_authorization",
    "parse_www_authenticate",
    "rank_offers",
]
