"""The key-name catalogue covers pi's and Takobot's names, and the validator
normalises, suggests, and never repeats what it was given."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from takod_daemon.key_names import CATALOGUE, KEY_NAMES, UnknownKeyName, catalogue_entry, normalise_key_name

# research/pi-auth.md §5.1: the API-key variables pi's getEnvApiKey reads (0.58.3, plus 0.73.1).
PI_KEY_VARS = {
    "ANTHROPIC_OAUTH_TOKEN": "anthropic",
    "ANTHROPIC_API_KEY": "anthropic",
    "ANTHROPIC_AUTH_TOKEN": "anthropic",
    "COPILOT_GITHUB_TOKEN": "github-copilot",
    "GH_TOKEN": "github-copilot",
    "GITHUB_TOKEN": "github-copilot",
    "OPENAI_API_KEY": "openai",
    "AZURE_OPENAI_API_KEY": "azure-openai-responses",
    "GEMINI_API_KEY": "google",
    "GOOGLE_CLOUD_API_KEY": "google-vertex",
    "AWS_ACCESS_KEY_ID": "amazon-bedrock",
    "AWS_SECRET_ACCESS_KEY": "amazon-bedrock",
    "AWS_BEARER_TOKEN_BEDROCK": "amazon-bedrock",
    "GROQ_API_KEY": "groq",
    "CEREBRAS_API_KEY": "cerebras",
    "XAI_API_KEY": "xai",
    "OPENROUTER_API_KEY": "openrouter",
    "AI_GATEWAY_API_KEY": "vercel-ai-gateway",
    "ZAI_API_KEY": "zai",
    "MISTRAL_API_KEY": "mistral",
    "MINIMAX_API_KEY": "minimax",
    "MINIMAX_CN_API_KEY": "minimax-cn",
    "HF_TOKEN": "huggingface",
    "OPENCODE_API_KEY": "opencode",
    "KIMI_API_KEY": "kimi-coding",
    "DEEPSEEK_API_KEY": "deepseek",
    "FIREWORKS_API_KEY": "fireworks",
    "MOONSHOT_API_KEY": "moonshotai",
    "CLOUDFLARE_API_KEY": "cloudflare-workers-ai",
    "XIAOMI_API_KEY": "xiaomi",
    "XIAOMI_TOKEN_PLAN_CN_API_KEY": "xiaomi-token-plan-cn",
    "XIAOMI_TOKEN_PLAN_AMS_API_KEY": "xiaomi-token-plan-ams",
    "XIAOMI_TOKEN_PLAN_SGP_API_KEY": "xiaomi-token-plan-sgp",
}
# research/takobot-inference.md §2.2: CONFIGURABLE_API_KEY_VARS, 19 names.
TAKOBOT_CONFIGURABLE = {
    "AI_GATEWAY_API_KEY", "ALI_BAILIAN_API_KEY", "ANTHROPIC_API_KEY", "AWS_BEARER_TOKEN_BEDROCK",
    "AZURE_OPENAI_API_KEY", "CEREBRAS_API_KEY", "CLAUDE_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
    "GROQ_API_KEY", "KIMI_API_KEY", "MIDDLEWARE_API_KEY", "MINIMAX_API_KEY", "MISTRAL_API_KEY",
    "OPENAI_API_KEY", "OPENROUTER_API_KEY", "VENICE_API_KEY", "XAI_API_KEY", "ZAI_API_KEY",
}  # fmt: skip
# Settings pi reads next to the keys; not secrets, so not in a keyring.
NOT_KEYS = {
    "AWS_PROFILE", "AWS_REGION", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_OPENAI_BASE_URL",
}  # fmt: skip

CANARY = "sk-ant-api03-CANARYc4n4ry9f8e7d6c5b4a"


def test_every_pi_api_key_variable_is_accepted_for_its_provider() -> None:
    for name, provider in PI_KEY_VARS.items():
        assert provider in catalogue_entry(name).providers, name


def test_every_takobot_configurable_name_is_accepted() -> None:
    assert len(TAKOBOT_CONFIGURABLE) == 19
    assert TAKOBOT_CONFIGURABLE <= KEY_NAMES


def test_the_catalogue_holds_exactly_those_names_and_no_settings() -> None:
    assert KEY_NAMES == set(PI_KEY_VARS) | TAKOBOT_CONFIGURABLE
    assert not NOT_KEYS & KEY_NAMES


def test_catalogue_entries_are_well_formed() -> None:
    assert len({entry.name for entry in CATALOGUE}) == len(CATALOGUE)
    for entry in CATALOGUE:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", entry.name)
        assert entry.providers and all(re.fullmatch(r"[a-z0-9-]+", p) for p in entry.providers)
        assert entry.description and "\n" not in entry.description


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("OPENAI_API_KEY", "OPENAI_API_KEY"),
        ("  openai_api_key\n", "OPENAI_API_KEY"),
        ("$GEMINI_API_KEY", "GEMINI_API_KEY"),
        ("anthropic-api-key", "ANTHROPIC_API_KEY"),
        ("openrouter api key", "OPENROUTER_API_KEY"),
        ("hf_token", "HF_TOKEN"),
    ],
)
def test_names_are_normalised(raw: str, expected: str) -> None:
    assert normalise_key_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "suggested"),
    [
        ("OPENAI_KEY", "OPENAI_API_KEY"),
        ("GEMNI_API_KEY", "GEMINI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),  # a provider id lists its keys
        ("openrouter", "OPENROUTER_API_KEY"),  # a name stem too
        ("XAI_KEY", "XAI_API_KEY"),  # the same stem, another suffix
        ("OPENAI_API_KYE", "OPENAI_API_KEY"),
        ("OPENAPI_API_KEY", "OPENAI_API_KEY"),
        ("GROQ_API_KEYS", "GROQ_API_KEY"),
        ("MISTRAL_API", "MISTRAL_API_KEY"),
    ],
)
def test_unknown_names_get_close_matches(raw: str, suggested: str) -> None:
    with pytest.raises(UnknownKeyName) as caught:
        normalise_key_name(raw)
    assert suggested in caught.value.suggestions
    assert suggested in str(caught.value)
    assert caught.value.code == "unknown_key_name"


@pytest.mark.parametrize("raw", ["frobnicate", "FOO_API_KEY", "NOPE_API_KEY", "BAR_TOKEN", "API_KEY"])
def test_an_unknown_name_with_no_match_points_at_the_list(raw: str) -> None:
    # FOO_API_KEY shares only the _API_KEY suffix with GOOGLE_API_KEY: no "did you mean".
    with pytest.raises(UnknownKeyName) as caught:
        normalise_key_name(raw)
    assert caught.value.suggestions == ()
    assert "did you mean" not in str(caught.value)
    assert "`takod key names`" in str(caught.value)


def test_a_secret_pasted_as_the_name_is_not_repeated() -> None:
    for raw in (CANARY, CANARY.upper(), CANARY.replace("-", "_").upper(), f"OPENAI_API_KEY={CANARY}"):
        with pytest.raises(UnknownKeyName) as caught:
            normalise_key_name(raw)
        text = f"{caught.value} {caught.value!r} {caught.value.suggestions}"
        for form in (CANARY, CANARY.upper(), CANARY.upper().replace("-", "_"), "C4N4RY"):
            assert form not in text


def test_a_non_string_name_is_rejected() -> None:
    with pytest.raises(UnknownKeyName):
        normalise_key_name(None)  # type: ignore[arg-type]


@given(st.sampled_from(sorted(KEY_NAMES)), st.sampled_from(["", " ", "\t", "\n"]), st.booleans())
def test_normalising_accepted_names_is_stable(name: str, pad: str, lower: bool) -> None:
    raw = pad + (name.lower() if lower else name) + pad
    assert normalise_key_name(raw) == name
    assert normalise_key_name(normalise_key_name(raw)) == name


# The error text is built from fixed words and catalogue names only.
_NAMES_RE = "|".join(sorted(KEY_NAMES, key=len, reverse=True))
_MESSAGE_RE = re.compile(
    rf"unknown API key name; (?:did you mean (?:{_NAMES_RE})(?:, (?:{_NAMES_RE}))*\?"
    rf"|`takod key names` lists the \d+ accepted names, e\.g\. (?:{_NAMES_RE}), (?:{_NAMES_RE}))"
)


@given(st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z][A-Za-z0-9_ -]{0,40}", fullmatch=True)))
def test_any_other_text_is_rejected_without_being_echoed(text: str) -> None:
    try:
        name = normalise_key_name(text)
    except UnknownKeyName as exc:
        assert _MESSAGE_RE.fullmatch(str(exc)), str(exc)
        assert set(exc.suggestions) <= KEY_NAMES
    else:
        assert name in KEY_NAMES
