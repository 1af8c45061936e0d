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
