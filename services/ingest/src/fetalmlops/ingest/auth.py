"""Ingest's scopes, and its routes behind the kernel's bearer tokens
(`fetalmlops.common.bearer_route`)."""

from __future__ import annotations

from collections.abc import Callable

from fetalmlops.common.bearer import Tokens
from fetalmlops.common.bearer_route import require as require_scope
from fetalmlops.ingest.settings import IngestSettings

IMAGES_WRITE = "images:write"
LABELS_WRITE = "labels:write"
FEEDBACK_WRITE = "feedback:write"


def require(scope: str, settings: IngestSettings) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with a token granting ``scope``."""
    return require_scope(scope, Tokens(settings.tokens))
