"""Keys in takod's store, reachable by the pi that Takobot runs in a workspace.

Takobot 0.1.88 gives its workspace pi an API key only two ways: from the
plaintext ``api_keys`` of the settings file (as an environment variable), or
through pi's own ``<ws>/.tako/pi/agent/auth.json``. Once a key lives in takod's
store instead (``takod key migrate``, ``takod key set``), that auth.json gets an
``api_key`` entry whose key is pi's ``!command`` form: a takod command that
reads the key from the store and prints it only into pi's pipe (pi >= 0.52 runs
it through the shell and caches the answer for the life of the process). No
plaintext copy is left anywhere.

The entry also carries the same command as ``apiKey``: Takobot's discovery
(``_has_pi_auth``) recognises an auth.json entry only by such a field, not by
pi's own ``{"type": "api_key", "key": ...}`` shape (research/takobot-inference.md
W6), and would otherwise call pi not ready. pi ignores the extra field.

An existing entry for the same pi provider is never replaced: pi prefers it
over an environment variable anyway, so Takobot's pi never used the settings
key for that provider. When the key leaves the store (``takod key clear``), the
entry goes too, if it is still one takod wrote: a command left behind would
fail while still counting as a credential.

Blocking functions: run them in a worker thread.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from .credentials import pi_auth
from .credentials.files import atomic_write, decode_json, encode_json, read_bytes
from .credentials.pi_lock import pi_lock

# Key name -> the pi provider whose auth.json api_key entry stands for it: the
# names pi's getEnvApiKey reads as that provider's one API key.
BRIDGED: dict[str, str] = {
    "OPENAI_API_KEY": "openai",
    "ANTHROPIC_API_KEY": "anthropic",
    "GEMINI_API_KEY": "google",
    "AZURE_OPENAI_API_KEY": "azure-openai-responses",
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
    "KIMI_API_KEY": "kimi-coding",
    "DEEPSEEK_API_KEY": "deepseek",
    "FIREWORKS_API_KEY": "fireworks",
}

# Takobot-configurable names no pi provider reads: Takobot hands them to pi as
# environment variables, where nothing uses them.
_NOT_READ_BY_PI = {
    "VENICE_API_KEY": "pi has no provider that reads VENICE_API_KEY",
    "GOOGLE_API_KEY": "pi reads GEMINI_API_KEY for Google, never GOOGLE_API_KEY",
    "ALI_BAILIAN_API_KEY": "pi has no provider that reads ALI_BAILIAN_API_KEY",
    "MIDDLEWARE_API_KEY": "pi has no provider that reads MIDDLEWARE_API_KEY",
    "CLAUDE_API_KEY": "Takobot reads CLAUDE_API_KEY only for its Claude status; pi never reads it",
}

Outcome = Literal["written", "present", "other-entry"]


def is_ours(entry: pi_auth.PiEntry | None, name: str) -> bool:
    """Whether ``entry`` is one :func:`bridge` wrote for ``name`` (with this or an
    earlier takod's interpreter path, which a reinstall may have moved)."""
    return (
        isinstance(entry, pi_auth.ApiKeyEntry)
        and entry.key is not None
        and entry.key.startswith("!")
        and entry.key.endswith(f" -m takod key get {name}")
        and entry.extra == {"apiKey": entry.key}
    )


def key_command(name: str, *, python: str, env: Mapping[str, str]) -> str:
    """pi's ``!command`` value that prints the stored key ``name``.

    The daemon's own interpreter runs ``-m takod``: the ``takod`` on a PATH may
    be another install. ``PYTHONPATH`` and ``TAKOD_SOCKET`` are carried over
    when the daemon has them, since pi (started by Takobot) will not.
    """
    parts = [f"{var}={shlex.quote(env[var])}" for var in ("PYTHONPATH", "TAKOD_SOCKET") if env.get(var)]
    parts += [shlex.quote(python), "-m", "takod", "key", "get", name]
    return "!" + " ".join(parts)


def takobot_would_lose(name: str) -> str | None:
    """Why moving ``name`` out of the settings file cannot be made up for Takobot's
    pi (None: it can, through :func:`bridge`)."""
    if name in BRIDGED:
        return None
    return _NOT_READ_BY_PI.get(name, f"no pi provider reads {name} from auth.json")


def bridge(workspace_auth: Path, name: str, command: str, seed_from: Sequence[Path], lock_timeout: float) -> Outcome:
    """Give ``workspace_auth`` an entry whose key is ``command`` for ``name``'s pi provider.

    A missing or empty workspace file is first seeded from ``seed_from`` (the
    home pi files), as Takobot and takod do, so the new entry never stops that
    copy. Raises :class:`~takod_daemon.credentials.files.FileProblem` for a file
    that cannot be parsed (never overwritten) and the pi lock errors.
    """
    provider = BRIDGED[name]
    pi_auth.seed_workspace_auth(workspace_auth, seed_from, lock_timeout=lock_timeout)
    outcome: list[Outcome] = []

    def choose(current: pi_auth.PiEntry | None) -> pi_auth.ApiKeyEntry | None:
        if isinstance(current, pi_auth.ApiKeyEntry) and current.key == command:
            outcome.append("present")
            return None
        if current is not None and not is_ours(current, name):
            outcome.append("other-entry")
            return None
        outcome.append("written")  # new, or ours from an older install
        return pi_auth.ApiKeyEntry(key=command, extra={"apiKey": command})

    pi_auth.replace_entry(workspace_auth, provider, choose, lock_timeout=lock_timeout)
    return outcome[0]


def unbridge(workspace_auth: Path, name: str, lock_timeout: float) -> bool:
    """Remove ``name``'s provider entry from ``workspace_auth`` if it is still one
    :func:`bridge` wrote; True when removed. Every other entry is kept byte for
    byte; a file that cannot be parsed is never rewritten."""
    provider = BRIDGED.get(name)
    if provider is None or read_bytes(workspace_auth) is None:
        return False
    with pi_lock(workspace_auth, timeout=lock_timeout) as held:
        raw = read_bytes(workspace_auth)
        if raw is None:
            return False
        doc = decode_json(raw, dict[str, msgspec.Raw])
        current = pi_auth.parse_entry(msgspec.json.decode(doc[provider])) if provider in doc else None
        if not is_ours(current, name):
            return False
        del doc[provider]
        held.ensure_held()
        atomic_write(workspace_auth, encode_json(doc), 0o600)
        return True
