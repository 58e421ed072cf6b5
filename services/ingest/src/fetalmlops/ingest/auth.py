"""Ingest's routes behind the kernel's scoped bearer tokens (`fetalmlops.common.bearer`).

A missing, malformed or unknown token is 401 with its ``WWW-Authenticate`` challenge; a known
token without the route's scope is 403. Health, readiness and metrics need no token.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fetalmlops.common.bearer import Tokens
from fetalmlops.ingest.settings import IngestSettings

IMAGES_WRITE = "images:write"
LABELS_WRITE = "labels:write"
# Declares the scheme in the OpenAPI document (the docs' "Authorize"); the check is the kernel's.
_declared = HTTPBearer(auto_error=False)


def require(scope: str, settings: IngestSettings) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with a token granting ``scope``."""
    tokens = Tokens(settings.tokens)

    def dependency(
        request: Request,
        _: HTTPAuthorizationCredentials | None = Depends(_declared),  # noqa: B008
    ) -> None:
        refused = tokens.refusal(request.headers.get("authorization"), scope)
        if refused is not None:
            headers = {"WWW-Authenticate": refused.challenge}
            raise HTTPException(refused.status, refused.reason, headers)

    return dependency
