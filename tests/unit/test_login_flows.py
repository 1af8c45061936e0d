"""Pure parts of the login flows: what the operator may paste, PKCE, provider names."""

from __future__ import annotations

import base64
import hashlib

import pytest

from takod_daemon.login import parse_authorization_input, pkce_pair, resolve_provider


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://localhost:1455/auth/callback?code=abc&state=s1", ("abc", "s1")),
        ("  https://x.example/cb?state=s2&code=c%2B2  ", ("c+2", "s2")),
        ("abc#s3", ("abc", "s3")),
        ("code=abc&state=s4", ("abc", "s4")),
        ("?code=abc", ("abc", None)),
        ("bare-code", ("bare-code", None)),
        ("", (None, None)),
        ("http://localhost:1455/auth/callback?error=access_denied", (None, None)),
    ],
)
def test_pasted_input_is_read_as_pi_reads_it(text: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_authorization_input(text) == expected


def test_pkce_is_s256_of_a_43_char_verifier() -> None:
    verifier, challenge = pkce_pair()
    assert len(verifier) == 43 and "=" not in verifier
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


def test_provider_names() -> None:
    assert resolve_provider("Codex") == ("oauth", "openai-codex")
    assert resolve_provider("claude") == ("oauth", "anthropic")
    assert resolve_provider("copilot") == ("oauth", "github-copilot")
    assert resolve_provider("openai") == ("key", "OPENAI_API_KEY")
    assert resolve_provider("gemini_api_key") == ("key", "GEMINI_API_KEY")
    with pytest.raises(ValueError) as err:
        resolve_provider("sk-secret-pasted-here")
    assert "sk-secret" not in str(err.value)
