"""Masking of secrets for anything a person or a log can see.

``mask_secret`` shows just enough to tell keys apart (``sk-ant-...3f9a``);
``redact_text`` finds secret-looking substrings inside free text (error
messages, subprocess output) and masks them; ``redact_value`` walks nested
data and masks values under secret-bearing keys as well.
"""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are always secret, wherever they appear.
SECRET_KEY_RE = re.compile(
    r"(?:^|_|-)(?:token|secret|password|passwd|authorization|api_?key|apikey|refresh|access|"
    r"id_token|code_verifier|cookie|credential|private_key|client_secret)(?:$|_|-|s$)|"
    r"^(?:key|value|code|answer|auth|bearer)$",
    re.IGNORECASE,
)

# Secret-looking substrings in free text.
_TEXT_PATTERNS = [
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{12,}"),  # OpenAI / Anthropic / OpenRouter style
    re.compile(r"\bgh[poasur]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"\bya29\.[0-9A-Za-z_\-\.]{20,}"),  # Google OAuth access tokens
    re.compile(r"\b1//[0-9A-Za-z_\-]{20,}"),  # Google refresh tokens
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),  # JWTs
    re.compile(r"\bgsk_[A-Za-z0-9]{20,}"),  # Groq
    re.compile(r"\bxai-[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9_\-\.=:/+]{12,}"),
    re.compile(r"(?i)(?<=[\"' ]x-api-key: )[A-Za-z0-9_\-\.=]{12,}"),
]
_ASSIGN_RE = re.compile(
    r"(?i)\b((?:[a-z0-9_]*_)?(?:api_?key|token|secret|password))(\s*[=:]\s*[\"']?)([^\s\"',;&]{8,})"
)


def mask_secret(value: str | None) -> str:
    """``sk-ant-api03-abcdef...3f9a`` -> ``sk-ant-...3f9a``; short values -> ``****``."""
    if not value:
        return ""
    value = str(value)
    if len(value) < 12:
        return "****"
    head = ""
    match = re.match(r"^([A-Za-z]{1,8}[-_](?:[A-Za-z]{1,6}[-_])?)", value)
    if match and len(match.group(1)) <= len(value) - 8:
        head = match.group(1)
    elif value.startswith("eyJ"):
        head = "eyJ"
    return f"{head}...{value[-4:]}"


def redact_text(text: str) -> str:
    """Mask every secret-looking substring of ``text``."""
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(lambda m: mask_secret(m.group(0)), text)
    return _ASSIGN_RE.sub(lambda m: m.group(1) + m.group(2) + mask_secret(m.group(3)), text)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY_RE.search(key))


def redact_value(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """Return a copy of ``value`` with secrets masked (by key name and by shape)."""
    if _depth > 32:
        return "<too deep>"
    if isinstance(value, dict):
        return {k: redact_value(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, key, _depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        if key is not None and is_secret_key(key):
            return mask_secret(value)
        return redact_text(value)
    return value
