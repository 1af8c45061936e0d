"""The one ChatGPT login that Codex and pi share.

Codex keeps it in ``$CODEX_HOME/auth.json`` ``tokens``; pi keeps it as the
``openai-codex`` oauth entry of its ``auth.json``. OpenAI refresh tokens are
single-use, so two diverging copies of one login mean the copy refreshed last
kills the other (Takobot bug W4). Linking keeps both on the newest tokens:
whichever side holds the newer access token (by its JWT ``iat``, then ``exp``)
is copied to the other; an older token never replaces a newer one, and when
the age cannot be told nothing is copied.

A token is copied only when it is plausible and for the same account
(docs/security.md, "linked grants"): the access token being copied is a JWT
with ``iat`` and ``exp``, ``exp`` after ``iat``, ``iat`` no more than
:data:`CLOCK_SKEW_S` in the future (a forged "newest" token would otherwise
win every comparison), and its ChatGPT account claim equals the other side's
account. Signatures cannot be checked here, so this stops junk and another
account's login, not a forger who knows the account id: that is what trusting
only the user's own stores is for (:mod:`takod_daemon.links`).

Field mapping, Codex -> pi (research takobot-inference.md §5): ``access_token``
-> ``access``, ``refresh_token`` -> ``refresh``, the access token's JWT ``exp``
(else the id token's, else "now", i.e. expired) in milliseconds -> ``expires``
(pi keeps no margin for this provider), ``account_id`` (else the id or access
token's ChatGPT account claim) -> ``accountId`` when known.

pi -> Codex: ``access``/``refresh`` become a :class:`TokenRefresh` for
``codex_auth.write_refreshed_tokens`` (pi keeps no id token, so Codex's stays).
A Codex without a ChatGPT login is never created from pi: Codex needs the id
token pi does not have.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

from takod_daemon.credentials.codex_auth import CodexAuth, TokenRefresh
from takod_daemon.credentials.jwt import JwtClaims, JwtError, decode_claims
from takod_daemon.credentials.pi_auth import OAuthEntry, PiEntry, read_auth, replace_entry
from takod_daemon.credentials.pi_lock import DEFAULT_TIMEOUT_S, HeldPiLock
from takod_daemon.credentials.summary import SecretStruct

PI_PROVIDER = "openai-codex"
# How far a token's ``iat`` may be ahead of our clock (clocks of this machine and
# OpenAI's servers differ a little; a token from the future is forged or broken).
CLOCK_SKEW_S = 300.0

Newer = Literal["codex", "pi", "same", "unknown"]
LinkAction = Literal["none", "update_pi", "update_codex"]


class LinkDecision(SecretStruct, frozen=True, kw_only=True):
    """What to do to bring both copies of the login in line.

    ``reason`` is a stable snake_case word. For ``update_pi``, ``pi_entry`` is
    the entry to store. For ``update_codex``, ``codex_update`` is to be written
    with ``codex_auth.write_refreshed_tokens(..., posted_refresh_token=
    codex_replaces)``, which refuses if Codex's file changed meanwhile.
    """

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"codex_replaces"})

    action: LinkAction
    reason: str
    pi_entry: OAuthEntry | None = None
    codex_update: TokenRefresh | None = None
    codex_replaces: str | None = None


def newer_side(codex_access: str, pi_access: str) -> Newer:
    """Which access token is newer: by JWT ``iat``, then ``exp``. ``unknown``
    when either is not a JWT or they carry no comparable time."""
    if codex_access == pi_access:
        return "same"
    codex, pi = _claims(codex_access), _claims(pi_access)
    if codex is None or pi is None:
        return "unknown"
    compared = False
    for name in ("iat", "exp"):
        a, b = getattr(codex, name), getattr(pi, name)
        if a is None or b is None:
            continue
        if a != b:
            return "codex" if a > b else "pi"
        compared = True
    return "same" if compared else "unknown"


def implausibility(access: str, now_s: float) -> str | None:
    """Why ``access`` cannot be a real access token to copy between stores; None when it can be."""
    claims = _claims(access)
    if claims is None:
        return "is not a JWT"
    if claims.iat is None or claims.exp is None:
        return "has no iat or exp claim"
    if claims.iat > now_s + CLOCK_SKEW_S:
        return "was issued in the future"
    if claims.exp <= claims.iat:
        return "expires before it was issued"
    return None


def pi_entry_from_codex(codex: CodexAuth, current: OAuthEntry | None, now_ms: int) -> OAuthEntry:
    """pi's ``openai-codex`` entry for Codex's tokens. Extras of ``current`` that
    the mapping does not set are kept (pi's own refresh would drop them).
    Raises ValueError when ``codex`` lacks the access or refresh token."""
    tokens = _login_tokens(codex)
    if tokens is None:
        raise ValueError("Codex has no complete ChatGPT login to copy")
    extra = dict(current.extra) if current is not None else {}
    if codex.account_id:
        extra["accountId"] = codex.account_id
    return OAuthEntry(
        access=tokens[0],
        refresh=tokens[1],
        expires=_expires_ms(codex, now_ms),
        extra=extra,
    )


def codex_update_from_pi(entry: OAuthEntry) -> TokenRefresh:
    """The Codex token update carrying pi's tokens."""
    return TokenRefresh(access_token=entry.access, refresh_token=entry.refresh)


def decide(codex: CodexAuth | None, pi: PiEntry | None, now_ms: int) -> LinkDecision:
    """Compare Codex's login with pi's ``openai-codex`` entry (either may be
    missing) and say which side, if any, should take the other's tokens."""
    if pi is not None and not isinstance(pi, OAuthEntry):
        # A stored api_key (or an entry we cannot read) is the user's choice for pi.
        return LinkDecision(action="none", reason="pi_entry_not_oauth")
    tokens = _login_tokens(codex) if codex is not None else None
    if codex is None or tokens is None:
        return LinkDecision(action="none", reason="no_codex_login" if pi is not None else "nothing_to_link")
    codex_access, codex_refresh = tokens
    if pi is None:
        entry = pi_entry_from_codex(codex, None, now_ms)
        return LinkDecision(action="update_pi", reason="pi_missing", pi_entry=entry)
    pi_account = pi.extra_str("accountId") or _account_of(pi.access)
    if codex.account_id and pi_account and codex.account_id != pi_account:
        return LinkDecision(action="none", reason="different_accounts")
    if codex_access == pi.access and codex_refresh == pi.refresh:
        return LinkDecision(action="none", reason="in_sync")
    newer = newer_side(codex_access, pi.access)
    if newer in ("codex", "pi"):
        source, other_account = (codex_access, pi_account) if newer == "codex" else (pi.access, codex.account_id)
        if implausibility(source, now_ms / 1000) is not None:
            return LinkDecision(action="none", reason="implausible_token")
        source_account = _account_of(source)
        if not source_account or not other_account:
            return LinkDecision(action="none", reason="account_unknown")
        if source_account != other_account:
            return LinkDecision(action="none", reason="different_accounts")
    if newer == "codex":
        entry = pi_entry_from_codex(codex, pi, now_ms)
        return LinkDecision(action="update_pi", reason="codex_newer", pi_entry=entry)
    if newer == "pi":
        return LinkDecision(
            action="update_codex",
            reason="pi_newer",
            codex_update=codex_update_from_pi(pi),
            codex_replaces=codex_refresh,
        )
    return LinkDecision(action="none", reason="same_age" if newer == "same" else "age_unknown")


def apply_to_pi(
    auth_path: Path,
    codex: CodexAuth | None,
    *,
    now_ms: int | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT_S,
    held: HeldPiLock | None = None,
) -> LinkDecision:
    """Bring pi's ``openai-codex`` entry in line with Codex's login. When pi
    should take Codex's tokens, the decision is made again on the file as
    re-read *under pi's lock*, and only that entry is merged and written
    atomically (0600). Returns the decision taken; an ``update_codex`` one is
    for the caller to hand to ``codex_auth``.

    Raises :class:`FileProblem` for a pi file that cannot be parsed (it is left
    alone) and the :mod:`pi_lock` errors. ``held``: the caller holds pi's lock
    on ``auth_path`` already (and read ``codex`` under Codex's lock).
    """
    stamp = now_ms if now_ms is not None else int(time.time() * 1000)
    # Most checks find nothing to write: decide on an unlocked read first, so
    # pi's lock is only taken (briefly) when pi's entry must change.
    before = read_auth(auth_path)
    decision = decide(codex, before.entries.get(PI_PROVIDER) if before else None, stamp)
    if decision.action != "update_pi":
        return decision

    def choose(current: PiEntry | None) -> OAuthEntry | None:
        nonlocal decision
        decision = decide(codex, current, stamp)
        return decision.pi_entry if decision.action == "update_pi" else None

    replace_entry(auth_path, PI_PROVIDER, choose, lock_timeout=lock_timeout, held=held)
    return decision


def _login_tokens(codex: CodexAuth) -> tuple[str, str] | None:
    """(access, refresh) of a complete ChatGPT login. Only that is shared:
    API-key mode and newer modes are Codex's own."""
    if codex.auth_mode != "chatgpt" or not codex.access_token or not codex.refresh_token:
        return None
    return codex.access_token, codex.refresh_token


def _expires_ms(codex: CodexAuth, now_ms: int) -> int:
    if codex.expires_at is not None:
        return int(codex.expires_at * 1000)
    identity = _claims(codex.id_token) if codex.id_token else None
    if identity is not None and identity.exp is not None:
        return int(identity.exp * 1000)
    return now_ms  # unknown: expired, so pi refreshes before use


def _account_of(access: str) -> str | None:
    claims = _claims(access)
    return claims.account_id if claims is not None else None


def _claims(token: str) -> JwtClaims | None:
    try:
        return decode_claims(token)
    except JwtError:
        return None
