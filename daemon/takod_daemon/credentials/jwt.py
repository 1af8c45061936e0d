"""Reading the claims of a JWT without verifying it.

Tools store OAuth access and id tokens as JWTs; their payload says when the
token expires and whose it is. takod only needs those facts to schedule
refreshes and to label accounts, never to trust the token, so the signature is
not checked. Errors never quote the token.
"""

from __future__ import annotations

import binascii
import math
from typing import Any

import msgspec

# Real tokens are a few KiB; anything far larger is junk, not a token.
MAX_TOKEN_CHARS = 64 * 1024

# Where OpenAI puts its ChatGPT claims (research providers.md A2).
OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"


class JwtError(ValueError):
    """The string is not a decodable JWT. ``reason`` is a stable snake_case word."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"not a usable JWT: {detail}")
        self.reason = reason


class JwtClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The claims takod uses. Times are epoch seconds; a claim of the wrong type is None."""

    exp: float | None = None
    iat: float | None = None
    email: str | None = None
    # ChatGPT workspace/account id (Codex compares it to decide "same account").
    account_id: str | None = None
    user_id: str | None = None
    plan_type: str | None = None


def decode_payload(token: str) -> dict[str, Any]:
    """The JSON object in the payload segment of ``token`` (base64url, padding optional)."""
    if not isinstance(token, str) or not token:
        raise JwtError("empty", "it is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise JwtError("too_large", f"it is longer than {MAX_TOKEN_CHARS} characters")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("not_a_jwt", f"it has {len(parts)} dot-separated parts, not 3")
    segment = parts[1]
    if not segment:
        raise JwtError("not_a_jwt", "its payload segment is empty")
    try:
        # Strict decoding so stray characters are an error, not silently dropped.
        standard = segment.replace("-", "+").replace("_", "/")
        data = binascii.a2b_base64(standard + "=" * (-len(standard) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise JwtError("bad_base64", "its payload is not base64url") from None
    try:
        payload = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise JwtError("bad_json", "its payload is not JSON") from None
    if not isinstance(payload, dict):
        raise JwtError("bad_json", "its payload is not a JSON object")
    return payload


def claims_from_payload(payload: dict[str, Any]) -> JwtClaims:
    """Pick the typed claims out of a decoded payload.

    Account claims are read at the top level first, then under OpenAI's
    ``https://api.openai.com/auth`` claim, as Codex and Takobot do.
    """
    nested = payload.get(OPENAI_AUTH_CLAIM)
    scopes = [payload, nested] if isinstance(nested, dict) else [payload]

    def first_str(*names: str) -> str | None:
        for scope in scopes:
            for name in names:
                value = scope.get(name)
                if isinstance(value, str) and value:
                    return value
        return None

    return JwtClaims(
        exp=_number(payload.get("exp")),
        iat=_number(payload.get("iat")),
        email=first_str("email"),
        account_id=first_str("chatgpt_account_id", "account_id"),
        user_id=first_str("chatgpt_user_id", "user_id"),
        plan_type=first_str("chatgpt_plan_type"),
    )


def decode_claims(token: str) -> JwtClaims:
    """Typed claims of ``token``; raises :class:`JwtError` when it is not a JWT."""
    return claims_from_payload(decode_payload(token))


def _number(value: object) -> float | None:
    # bool is an int subclass but never a NumericDate; huge or infinite numbers are junk.
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
