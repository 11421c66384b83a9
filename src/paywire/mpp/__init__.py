"""MPP — the IETF-track ``Payment`` HTTP authentication scheme (digest §11), sans-I/O.

``MppServer`` issues ``WWW-Authenticate: Payment`` challenges (JCS request, HMAC-bound id) and judges
``Authorization: Payment`` credentials; ``redeem`` adds the method check, the single-use claim in the store
and settlement. Methods live in ``paywire.mpp.methods`` (``evm/charge``, ``lightning/charge``).
"""

from paywire.mpp.accept import PaymentRange, parse_accept_payment, rank_offers
from paywire.mpp.b64 import b64url_decode, b64url_encode
from paywire.mpp.challenge import Challenge, ChallengeBinder, parse_www_authenticate
from paywire.mpp.credential import ChallengeEcho, Credential, parse_authorization
from paywire.mpp.digest import content_digest, digest_matches
from paywire.mpp.jcs import JcsError, canonicalize
from paywire.mpp.problems import Problem, ProblemType
from paywire.mpp.receipt import Receipt
from paywire.mpp.server import Accepted, MppServer, Offer, Reply

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
