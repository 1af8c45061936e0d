"""Providers sitting out a failure: how long, after what, and when that no longer holds.

A rate limit or an auth failure puts a provider on a cooldown so the next
prompts skip it. A cooldown is about the credentials the provider had when it
failed: it ends at its time, or as soon as they change (what a credential file
says, a key set or cleared, the settings' keys, or ``takod probe``), since the
fix may be exactly that. The state manager counts those changes per provider
(``generation``); a cooldown remembers the count it began at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Cooldown:
    until: float  # epoch seconds
    after: str  # what failed: "auth" | "rate limit"
    generation: int  # the provider's credential generation when it began


class Cooldowns:
    """The cooldowns in force, checked against the providers' current credential generations."""

    def __init__(self, generation: Callable[[str], int]):
        self._generation = generation
        self._entries: dict[str, Cooldown] = {}

    def begin(self, provider: str, until: float, after: str) -> None:
        self._entries[provider] = Cooldown(until, after, self._generation(provider))

    def active(self, now: float) -> dict[str, Cooldown]:
        """The cooldowns still in force: not over, and their credentials unchanged."""
        self._entries = {
            p: c for p, c in self._entries.items() if c.until > now and c.generation == self._generation(p)
        }
        return dict(self._entries)

    def next_end(self) -> float | None:
        """When the earliest cooldown ends (epoch seconds), or None."""
        return min((c.until for c in self._entries.values()), default=None)


def describe(cooldown: Cooldown, now: float) -> str:
    """``cooling down for 42 s after rate limit``: the routing trace's words."""
    return f"cooling down for {max(int(cooldown.until - now), 0)} s after {cooldown.after}"
