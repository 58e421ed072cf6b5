"""Bearer tokens with scopes, checked the same way by every service (RFC 6750).

A service holds tokens, each with the scopes it grants (``images:write``, ``labels:write``,
``models:predict``, ``reports:read``, ...; ``*`` grants every one). A request presents one as
``Authorization: Bearer <token>`` and is refused, with the challenge of RFC 6750 section 3:

* 401 ``Bearer`` when it presents no credentials (no error code, as the RFC asks);
* 401 ``Bearer error="invalid_request"`` when the header is not ``Bearer <token>``;
* 401 ``Bearer error="invalid_token"`` when the token is not one of the service's;
* 403 ``Bearer error="insufficient_scope", scope="..."`` when it lacks the route's scope.

Tokens are held as SHA-256 digests, all of one length, and every one is compared in constant
time: the time an answer takes says neither which token came close nor how long one is. No
reason quotes what was presented, and nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

EVERY_SCOPE = "*"


@dataclass(frozen=True)
class Refusal:
    """Why a request may not pass: its HTTP status, a reason and the WWW-Authenticate value."""

    status: int
    reason: str
    challenge: str


MISSING = Refusal(401, "missing bearer token: send 'Authorization: Bearer <token>'", "Bearer")
MALFORMED = Refusal(
    401, "the Authorization header is not 'Bearer <token>'", 'Bearer error="invalid_request"'
)
UNKNOWN = Refusal(401, "invalid bearer token", 'Bearer error="invalid_token"')


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """A service's tokens and the scopes each grants."""

    def __init__(self, scopes_by_token: Mapping[str, Collection[str]]) -> None:
        self._granted = tuple(
            (digest(token), frozenset(scopes)) for token, scopes in scopes_by_token.items()
        )

    @classmethod
    def granting_every_scope(cls, tokens: Iterable[str]) -> Tokens:
        return cls({token: (EVERY_SCOPE,) for token in tokens})

    def __bool__(self) -> bool:
        return bool(self._granted)

    def refusal(self, authorization: str | None, scope: str) -> Refusal | None:
        """Why a request with this Authorization header may not use ``scope``; None if it may."""
        if authorization is None or not authorization.strip():
            return MISSING
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return MALFORMED
        presented = digest(token.strip())
        granted: frozenset[str] | None = None
        for known, scopes in self._granted:  # every one, whatever matched before
            if hmac.compare_digest(presented, known):
                granted = scopes
        if granted is None:
            return UNKNOWN
        if scope not in granted and EVERY_SCOPE not in granted:
            challenge = f'Bearer error="insufficient_scope", scope="{scope}"'
            return Refusal(403, f"the token lacks the scope {scope}", challenge)
        return None


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only: where a service with
    no tokens may answer."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: what it resolves to is not ours to trust
