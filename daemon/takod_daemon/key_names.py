"""The API key names takod stores, and the check that turns user input into one.

The catalogue is the union of the environment variables pi reads for API keys
(``getEnvApiKey``, pi 0.58.3 plus the names added by 0.73.1) and Takobot's
``CONFIGURABLE_API_KEY_VARS``, so every key a Tako workspace could hold today
has a home. Only secrets are listed: the non-secret variables pi also reads
(``AWS_PROFILE``, ``AWS_REGION``, ``GOOGLE_CLOUD_PROJECT``, credential *file*
paths, base URLs) are settings, not keys, and do not belong in a keyring.
"""

from __future__ import annotations

import difflib
import re

import msgspec

# Env-var shaped: what a key name looks like once normalised.
_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_SEPARATORS_RE = re.compile(r"[\s-]+")
_MAX_SUGGESTIONS = 5
_KEY_SUFFIX_RE = re.compile(r"(_API_[A-Z]{2,5}|_?(API_?)?(KEYS?|TOKEN))$")  # _API_KEY, _APIKEY, _KEYS, _API_KYE...


class KeyName(msgspec.Struct, frozen=True):
    """One accepted key name: the env var, who reads it, and what it is."""

    name: str
    providers: tuple[str, ...]
    description: str


class UnknownKeyName(ValueError):
    """Input that is not a key name takod stores.

    ``suggestions`` holds close catalogue names. The message never repeats the
    input: a secret pasted where the name belongs must not reach a log.
    """

    code = "unknown_key_name"

    def __init__(self, message: str, suggestions: tuple[str, ...]):
        super().__init__(message)
        self.suggestions = suggestions


def _k(name: str, providers: str, description: str) -> KeyName:
    return KeyName(name, tuple(providers.split()), description)


CATALOGUE: tuple[KeyName, ...] = (
    # pi getEnvApiKey (0.58.3); provider ids are pi's.
    _k("ANTHROPIC_API_KEY", "anthropic", "Anthropic API key (pi; Claude Code sends it as X-Api-Key)."),
    _k("ANTHROPIC_OAUTH_TOKEN", "anthropic", "Anthropic OAuth token; pi prefers it over ANTHROPIC_API_KEY."),
    _k("ANTHROPIC_AUTH_TOKEN", "anthropic", "Anthropic token sent as Authorization: Bearer (pi 1.x, Claude Code)."),
    _k("COPILOT_GITHUB_TOKEN", "github-copilot", "GitHub token for Copilot; the only Copilot variable pi 1.x reads."),
    _k("GH_TOKEN", "github-copilot", "GitHub token pi 0.x falls back to for Copilot."),
    _k("GITHUB_TOKEN", "github-copilot", "GitHub token pi 0.x falls back to for Copilot after GH_TOKEN."),
    _k("OPENAI_API_KEY", "openai", "OpenAI API key."),
    _k("AZURE_OPENAI_API_KEY", "azure-openai-responses", "Azure OpenAI API key (pi provider `azure` in 1.x)."),
    _k("GEMINI_API_KEY", "google", "Gemini API key (pi provider google; Gemini CLI)."),
    _k("GOOGLE_CLOUD_API_KEY", "google-vertex", "Google Cloud API key for Vertex AI."),
    _k("AWS_BEARER_TOKEN_BEDROCK", "amazon-bedrock", "Amazon Bedrock API key (bearer token)."),
    _k("AWS_ACCESS_KEY_ID", "amazon-bedrock", "AWS access key id, paired with AWS_SECRET_ACCESS_KEY, for Bedrock."),
    _k("AWS_SECRET_ACCESS_KEY", "amazon-bedrock", "AWS secret access key, paired with AWS_ACCESS_KEY_ID, for Bedrock."),
    _k("GROQ_API_KEY", "groq", "Groq API key."),
    _k("CEREBRAS_API_KEY", "cerebras", "Cerebras API key."),
    _k("XAI_API_KEY", "xai", "xAI (Grok) API key."),
    _k("OPENROUTER_API_KEY", "openrouter", "OpenRouter API key."),
    _k("AI_GATEWAY_API_KEY", "vercel-ai-gateway", "Vercel AI Gateway API key."),
    _k("ZAI_API_KEY", "zai", "Z.ai API key."),
    _k("MISTRAL_API_KEY", "mistral", "Mistral API key."),
    _k("MINIMAX_API_KEY", "minimax", "MiniMax API key."),
    _k("MINIMAX_CN_API_KEY", "minimax-cn", "MiniMax API key for the China endpoint."),
    _k("HF_TOKEN", "huggingface", "Hugging Face access token."),
    _k("OPENCODE_API_KEY", "opencode opencode-go", "OpenCode API key."),
    _k("KIMI_API_KEY", "kimi-coding", "Kimi coding API key."),
    # Added by pi 0.73.1.
    _k("DEEPSEEK_API_KEY", "deepseek", "DeepSeek API key."),
    _k("FIREWORKS_API_KEY", "fireworks", "Fireworks AI API key."),
    _k("MOONSHOT_API_KEY", "moonshotai moonshotai-cn", "Moonshot AI API key."),
    _k(
        "CLOUDFLARE_API_KEY",
        "cloudflare-workers-ai cloudflare-ai-gateway",
        "Cloudflare API key for Workers AI and AI Gateway.",
    ),
    _k("XIAOMI_API_KEY", "xiaomi", "Xiaomi API key."),
    _k("XIAOMI_TOKEN_PLAN_CN_API_KEY", "xiaomi-token-plan-cn", "Xiaomi token-plan API key, CN region."),
    _k("XIAOMI_TOKEN_PLAN_AMS_API_KEY", "xiaomi-token-plan-ams", "Xiaomi token-plan API key, AMS region."),
    _k("XIAOMI_TOKEN_PLAN_SGP_API_KEY", "xiaomi-token-plan-sgp", "Xiaomi token-plan API key, SGP region."),
    # Takobot's configurable names that pi's getEnvApiKey does not read: they make no provider
    # ready by themselves (docs/readiness.md), only through a pi auth.json key or !command naming them.
    _k("VENICE_API_KEY", "venice", "Venice API key (Takobot-configurable; pi does not read it)."),
    _k("GOOGLE_API_KEY", "google", "Google API key; Gemini CLI uses it for Vertex (pi does not read it)."),
    _k("ALI_BAILIAN_API_KEY", "ali-bailian", "Alibaba Cloud Bailian API key (Takobot-configurable; pi does not read it)."),
    _k("MIDDLEWARE_API_KEY", "middleware", "Middleware API key (Takobot-configurable; pi does not read it)."),
    _k("CLAUDE_API_KEY", "anthropic",
       "Takobot's alias for an Anthropic key; neither pi nor Claude Code reads it: prefer ANTHROPIC_API_KEY."),
)

_BY_NAME: dict[str, KeyName] = {entry.name: entry for entry in CATALOGUE}
KEY_NAMES: frozenset[str] = frozenset(_BY_NAME)


def normalise_key_name(raw: str) -> str:
    """Return the catalogue name for ``raw`` (trimmed, upper-cased, ``-`` and
    inner spaces read as ``_``, a leading ``$`` dropped), or raise
    :class:`UnknownKeyName`."""
    if not isinstance(raw, str):
        raise UnknownKeyName("a key name must be text, like OPENAI_API_KEY", ())
    name = _SEPARATORS_RE.sub("_", raw.strip().lstrip("$").upper())
    if name in _BY_NAME:
        return name
    suggestions = _suggest(name)
    if suggestions:
        hint = "did you mean " + ", ".join(suggestions) + "?"
    else:
        hint = f"`takod key names` lists the {len(CATALOGUE)} accepted names, e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY"
    raise UnknownKeyName(f"unknown API key name; {hint}", suggestions)


def catalogue_entry(name: str) -> KeyName:
    """The catalogue entry for ``name`` (normalised first)."""
    return _BY_NAME[normalise_key_name(name)]


def _suggest(name: str) -> tuple[str, ...]:
    if not name or not _NAME_RE.match(name):
        return ()
    provider = name.lower().replace("_", "-")
    # A provider id ("anthropic") or a name stem ("OPENAI") suggests its keys.
    found = [e.name for e in CATALOGUE if provider in e.providers or e.name.startswith(name + "_")]
    # Close in full *and* in the part before _API_KEY: the shared suffix alone
    # makes FOO_API_KEY look 80% like GOOGLE_API_KEY.
    stem = _stem(name)
    found += [e.name for e in CATALOGUE if _stem(e.name) == stem]  # XAI_KEY: XAI_API_KEY
    found += [
        close for close in difflib.get_close_matches(name, _BY_NAME, n=3, cutoff=0.8)
        if difflib.SequenceMatcher(None, stem, _stem(close)).ratio() >= 0.7
    ]
    return tuple(dict.fromkeys(found))[:_MAX_SUGGESTIONS]


def _stem(name: str) -> str:
    return _KEY_SUFFIX_RE.sub("", name)
