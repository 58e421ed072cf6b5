"""One scoped bearer-token check for every service (RFC 6750 section 3)."""

from __future__ import annotations

import pytest

from fetalmlops.common.bearer import MALFORMED, MISSING, UNKNOWN, Tokens

TOKENS = Tokens({"writer-token": ["images:write"], "both-token": ["images:write", "labels:write"]})


@pytest.mark.parametrize(
    ("authorization", "refused"),
    [
        (None, MISSING),
        ("", MISSING),
        ("Basic d3JpdGVyLXRva2Vu", MALFORMED),
        ("Bearer", MALFORMED),
        ("Bearer   ", MALFORMED),
        ("Bearer writer-token-but-longer", UNKNOWN),
        ("Bearer writer-toke", UNKNOWN),
    ],
)
def test_a_request_without_a_known_token_is_401_with_its_challenge(
    authorization: str | None, refused: object
) -> None:
    assert TOKENS.refusal(authorization, "images:write") == refused


def test_a_known_token_passes_with_its_scopes_and_is_403_without() -> None:
    assert TOKENS.refusal("Bearer writer-token", "images:write") is None
    assert TOKENS.refusal("bearer  both-token ", "labels:write") is None  # scheme: any case
    refused = TOKENS.refusal("Bearer writer-token", "labels:write")
    assert refused is not None and refused.status == 403
    assert refused.challenge == 'Bearer error="insufficient_scope", scope="labels:write"'
    assert "writer-token" not in refused.reason


def test_tokens_granting_every_scope_and_none_at_all() -> None:
    every = Tokens.granting_every_scope(["t1", "t2"])
    assert every.refusal("Bearer t2", "models:predict") is None
    assert every.refusal("Bearer t2", "reports:read") is None
    assert bool(every) and not Tokens({})
    assert [r.status for r in (MISSING, MALFORMED, UNKNOWN)] == [401, 401, 401]
