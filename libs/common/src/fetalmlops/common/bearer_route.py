"""A FastAPI route behind the kernel's scoped bearer tokens (`fetalmlops.common.bearer`).

A missing, malformed or unknown token is 401 with its ``WWW-Authenticate`` challenge; a known
token without the route's scope is 403. Health, readiness and metrics take no such dependency.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fetalmlops.common.bearer import Tokens

# Declares the scheme in the OpenAPI document (the docs' "Authorize"); the check is `Tokens`'.
_declared = HTTPBearer(auto_error=False)


def require(scope: str, tokens: Tokens) -> Callable[..., None]:
    """A dependency that lets a request through only with a token granting ``scope``."""

    def dependency(
        request: Request,
        _: HTTPAuthorizationCredentials | None = Depends(_declared),  # noqa: B008
    ) -> None:
        refused = tokens.refusal(request.headers.get("authorization"), scope)
        if refused is not None:
            headers = {"WWW-Authenticate": refused.challenge}
            raise HTTPException(refused.status, refused.reason, headers)

    return dependency
