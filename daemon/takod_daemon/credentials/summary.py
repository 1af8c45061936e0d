"""What every credential reader hands to readiness, and how secret-bearing
reader Structs print.

A reader (pi, Codex, Claude Code, Gemini CLI, ...) turns whatever it found
into :class:`CredentialSummary` values, best first. Summaries never hold a
secret: only its masked form. Readers that must also return raw secrets (the
refresh code needs the refresh token) use :class:`SecretStruct`, whose repr
masks them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Literal

import msgspec

from takod_daemon.redact import mask_secret

CredentialKind = Literal["api_key", "oauth"]


class CredentialSummary(msgspec.Struct, frozen=True):
    """One credential a provider could use, as readiness and ``auth.inventory`` see it.

    - ``provider``: ``pi``, ``codex``, ``claude``, ``gemini`` (or a pi sub-provider name).
    - ``source``: the file path it was read from, or the environment variable's
      name, or ``keyring:<service>`` for a store takod cannot read.
    - ``kind``: ``api_key`` for static keys and tokens, ``oauth`` for logins.
    - ``masked``: the secret masked with ``mask_secret`` (``""`` when unknown).
    - ``expires_at``: epoch seconds when the usable token expires; None when it
      does not expire or nobody can tell.
    - ``refreshable``: a refresh token exists, so expiry alone is not the end of
      the login (the owning tool or takod can renew it).
    - ``read_only``: takod must never write this credential back.
    - ``account``: who it belongs to (email or account id), when known.
    - ``note``: one short human sentence worth showing next to it.
    - ``unverified``: only a real request can tell whether it works (for example
      Gemini personal OAuth, which Google may refuse, or a keyring takod
      cannot read).
    """

    provider: str
    source: str
    kind: CredentialKind
    masked: str
    expires_at: float | None = None
    refreshable: bool = False
    read_only: bool = True
    account: str | None = None
    note: str | None = None
    unverified: bool = False

    def expired(self, now: float) -> bool:
        """True when the token's expiry is known and not after ``now``."""
        return self.expires_at is not None and self.expires_at <= now

    def needs_login(self, now: float) -> bool:
        """True when the credential is expired and nothing can renew it."""
        return self.expired(now) and not self.refreshable


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secret(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


class SecretStruct(msgspec.Struct, frozen=True):
    """Base for Structs that hold raw secrets: fields named in
    ``__secret_fields__`` are masked in ``repr`` (and rich's repr), so a
    logged or asserted object never shows them."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset()

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            yield name, _masked(value) if name in self.__secret_fields__ else value

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"{type(self).__name__}({fields})"
