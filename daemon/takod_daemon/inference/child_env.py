"""The environment a provider CLI is given: everything but the secrets it has no use for.

The daemon's environment, plus every key in the key store, is the *pool*. A CLI
gets all of the pool's ordinary variables (PATH, HOME, locale, proxies, its own
settings) but, of the secret-looking ones (names like ``*_API_KEY``,
``*_TOKEN``, ``*_SECRET``, ``AWS_ACCESS_KEY_ID``), only those of the services it
can talk to: Codex never sees an Anthropic key, Claude Code never sees AWS
credentials unless it is set up for Bedrock, and no CLI sees an unrelated
``DATABASE_PASSWORD`` or ``NPM_TOKEN``. pi gets exactly the variables its
resolved credential needs (``resolve/pi.py``, ``child_env``). A ``--version``
probe needs no secret at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..redact import is_secret_key
from ..resolve.claude import child_secret_prefixes

# What subprocess_run masks as secret, by name; the same test decides what is withheld.
_SECRET_SUFFIX_RE = re.compile(r"(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)

# The CLIs filtered here (pi: resolve/pi.py).
CLI_PROVIDERS = frozenset({"codex", "claude", "gemini"})

# Secret-looking names each CLI may be given, by prefix (or exact name); claude: resolve.claude.
_ALLOWED_PREFIXES: dict[str, tuple[str, ...]] = {
    "codex": ("OPENAI_", "CODEX_", "AZURE_OPENAI_"),
    "gemini": ("GEMINI_", "GOOGLE_"),
}


def is_secret_name(name: str) -> bool:
    """Whether a variable called ``name`` holds a secret, judging by its name."""
    return is_secret_key(name) or bool(_SECRET_SUFFIX_RE.search(name))


def _allowed_prefixes(provider: str, env: Mapping[str, str]) -> tuple[str, ...]:
    if provider == "claude":
        return child_secret_prefixes(env)  # Claude Code on Bedrock or Vertex signs in with the cloud's credentials
    return _ALLOWED_PREFIXES.get(provider, ())


def filter_env(provider: str, env: Mapping[str, str], extra_secrets: frozenset[str] = frozenset()) -> dict[str, str]:
    """``env`` without the secrets ``provider``'s CLI does not need; ``extra_secrets``
    names more variables it may have (codex: the keys its config names, ``resolve.codex``)."""
    prefixes = _allowed_prefixes(provider, env)

    def keep(name: str) -> bool:
        if not is_secret_name(name) or name in extra_secrets:
            return True
        return name.startswith(prefixes)

    return {name: value for name, value in env.items() if keep(name)}


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every secret-looking variable left out (for ``--version`` probes)."""
    return {name: value for name, value in env.items() if not is_secret_name(name)}
