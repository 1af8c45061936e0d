"""Unverified JWT claim decoding."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from takod_daemon.credentials.jwt import MAX_TOKEN_CHARS, JwtClaims, JwtError, decode_claims, decode_payload

CANARY = "CANARYjwtSECRET0123456789"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict, *, padded: bool = False) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    if not padded:
        payload = payload.rstrip("=")
    return f"{header}.{payload}.sig{CANARY}"


def test_reads_times_and_identity_claims() -> None:
    token = make_jwt({"exp": 1_900_000_000, "iat": 1_899_996_400, "email": "a@example.com"})
    assert decode_claims(token) == JwtClaims(exp=1_900_000_000.0, iat=1_899_996_400.0, email="a@example.com")


def test_reads_openai_claims_under_the_auth_namespace() -> None:
    token = make_jwt(
        {
            "exp": 10,
            "https://api.openai.com/auth": {
                "chatgpt_account_id": "acct-1",
                "chatgpt_user_id": "user-1",
                "chatgpt_plan_type": "plus",
            },
        }
    )
    claims = decode_claims(token)
    assert (claims.account_id, claims.user_id, claims.plan_type) == ("acct-1", "user-1", "plus")


def test_top_level_account_claim_wins_over_the_namespace() -> None:
    token = make_jwt({"account_id": "top", "https://api.openai.com/auth": {"chatgpt_account_id": "nested"}})
    assert decode_claims(token).account_id == "top"


@pytest.mark.parametrize("claims", [{"exp": "1900000000"}, {"exp": True}, {"exp": None}, {"exp": 10**400}])
def test_a_claim_of_the_wrong_type_is_none(claims: dict) -> None:
    assert decode_claims(make_jwt(claims)).exp is None


def test_padded_payload_is_accepted() -> None:
    assert decode_claims(make_jwt({"exp": 5, "x": "ab"}, padded=True)).exp == 5.0


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=5), st.integers(0, 2**40))
def test_any_payload_length_round_trips(extra: dict, exp: int) -> None:
    claims = {**extra, "exp": exp}
    assert decode_payload(make_jwt(claims)) == claims


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "empty"),
        (f"{CANARY}", "not_a_jwt"),
        (f"a.{CANARY}", "not_a_jwt"),
        (f"a.b.c.{CANARY}", "not_a_jwt"),
        (f"a..{CANARY}", "not_a_jwt"),
        (f"a.{CANARY}!!.c", "bad_base64"),
        (f"a.{b64url(CANARY.encode())}.c", "bad_json"),
        (f"a.{b64url(json.dumps([CANARY]).encode())}.c", "bad_json"),
        ("a." + "A" * MAX_TOKEN_CHARS + f".{CANARY}", "too_large"),
    ],
)
def test_junk_is_a_clear_error_that_never_quotes_the_token(token: str, reason: str) -> None:
    with pytest.raises(JwtError) as info:
        decode_claims(token)
    assert info.value.reason == reason
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value)
