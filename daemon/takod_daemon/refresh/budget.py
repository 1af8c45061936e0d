"""How many token requests one grant may cost: a budget that holds whatever the endpoint answers.

A refresh normally buys hours of life, so a grant is refreshed a few times a
day. An endpoint answering with a token that is already expired, has no
readable expiry (an opaque Codex access token), lives 0 s or "forever", or is
the very token sent, would otherwise make the grant due again at once: a loop
of requests, each rotating the refresh token, that risks the user's account.
So, per grant, whatever the answer:

- after a refresh, the next one waits ``MIN_GAP_S``, doubling with every
  further refresh in the last hour (5, 10, 20 minutes);
- at most ``MAX_PER_WINDOW`` refreshes in any ``WINDOW_S``.

Pure functions of the refresh times (wall-clock epoch seconds); the broker
keeps the times and reports a hold as the grant's state ``backing-off`` with
the reason code and the time of the next attempt.

One more hold is about not racing Codex rather than the endpoint: Codex reads
its ``auth.json`` and sends its token request *before* it takes any lock, so a
Codex starting while takod refreshes the same login spends the same refresh
token (docs/refresh.md). In steady state takod refreshes long before Codex's own
window (5 minutes before ``exp``) and Codex never refreshes. A Codex login that
takod first finds already inside that window (expired while takod was not
running, suspended or stopped) is one a starting Codex refreshes itself: takod
gives Codex the first move for ``CODEX_GRACE_S`` and adopts what it writes; only
a login still unrefreshed after that is refreshed by takod.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

WINDOW_S = 3600.0
MAX_PER_WINDOW = 4
MIN_GAP_S = 300.0

# Reason codes (stable; shown by `takod auth` and in auth.inventory).
REFRESHED_RECENTLY = "refreshed_recently"
BUDGET_SPENT = "refresh_budget_spent"
WAITING_FOR_CODEX = "waiting_for_codex"

# Codex refreshes its own login when it runs and the access token expires within
# this (codex-rs auth: 5 minutes before the JWT exp).
CODEX_WINDOW_S = 300.0
# How long takod leaves an expired Codex login to a Codex that may be starting:
# well above what a starting `codex exec` takes to send its request and write its
# file on a loaded machine (docs/reliability.md Part 4), well below any harm (nobody
# but Codex uses the login, and Codex refreshes it itself).
CODEX_GRACE_S = 45.0


class Hold(msgspec.Struct, frozen=True):
    """No refresh before ``until`` (epoch seconds), for ``reason``."""

    until: float
    reason: str


def recent(times: Iterable[float], now: float) -> list[float]:
    """The refresh times inside the window ending at ``now``, oldest first. A
    time ahead of ``now`` (the wall clock went back) counts as ``now``."""
    return sorted(min(t, now) for t in times if t > now - WINDOW_S)


def hold(times: Iterable[float], now: float) -> Hold | None:
    """Whether a refresh of a grant refreshed at ``times`` must wait at ``now``."""
    done = recent(times, now)
    if not done:
        return None
    gap_until = done[-1] + MIN_GAP_S * 2 ** (len(done) - 1)
    until, reason = gap_until, REFRESHED_RECENTLY
    if len(done) >= MAX_PER_WINDOW:
        window_until = done[-MAX_PER_WINDOW] + WINDOW_S
        if window_until >= until:
            until, reason = window_until, BUDGET_SPENT
    return Hold(until, reason) if until > now else None


def prune(times: Iterable[float], now: float) -> list[float]:
    """The times still worth keeping (inside the window)."""
    return recent(times, now)


def in_codex_window(expires_at: float, now: float) -> bool:
    """Whether a starting Codex would refresh a login expiring at ``expires_at`` itself."""
    return expires_at - CODEX_WINDOW_S <= now


def codex_first_move(noticed_at: float, now: float) -> Hold | None:
    """The wait for Codex to refresh its own login, noticed inside its window at ``noticed_at``."""
    until = noticed_at + CODEX_GRACE_S
    return Hold(until, WAITING_FOR_CODEX) if until > now else None


def later(*holds: Hold | None) -> Hold | None:
    """The hold that ends last (None when there is none)."""
    return max((h for h in holds if h is not None), key=lambda h: h.until, default=None)
