"""Bearer tokens with scopes on every route but health (RFC 6750 error semantics).

A missing or unknown token is 401 with a ``WWW-Authenticate: Bearer`` challenge; a known token
without the route's scope is 403. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fetalmlops.ingest.settings import IngestSettings

IMAGES_WRITE = "images:write"
LABELS_WRITE = "labels:write"

_bearer = HTTPBearer(auto_error=False)


def scopes_of(token: str, settings: IngestSettings) -> list[str] | None:
    found = None
    for known, scopes in settings.tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = scopes
    return found


def require(scope: str, settings: IngestSettings) -> Callable[..., None]:
    def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:  # noqa: B008
        challenge = {"WWW-Authenticate": f'Bearer scope="{scope}"'}
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", challenge)
        scopes = scopes_of(credentials.credentials, settings)
        if scopes is None:
            challenge["WWW-Authenticate"] += ', error="invalid_token"'
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid bearer token", challenge)
        if scope not in scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"token lacks the scope {scope}")

    return dependency
