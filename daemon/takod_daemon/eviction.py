"""How many workspaces the daemon keeps loaded, and which to let go.

Every loaded workspace costs watches, an Ollama probe loop and memory, and
every file event re-evaluates all of them; a client that names thousands must
not make the daemon slower for everyone. So a workspace nobody named for
``idle_s`` seconds is let go, and beyond ``max_workspaces`` the least recently
used ones are, except the pinned (the default workspace, and any a connection
said ``hello`` with while it stays open). One that is named again is loaded
again, from its files, like the first time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")

DEFAULT_MAX_WORKSPACES = 32
DEFAULT_IDLE_S = 1800.0


@dataclass(frozen=True)
class Bounds:
    max_workspaces: int = DEFAULT_MAX_WORKSPACES
    idle_s: float = DEFAULT_IDLE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Bounds":
        """``TAKOD_MAX_WORKSPACES`` and ``TAKOD_WORKSPACE_IDLE_S`` where set to a
        positive number (tests and benchmarks use small ones); else the defaults."""
        return cls(
            max_workspaces=int(_positive(env.get("TAKOD_MAX_WORKSPACES"), DEFAULT_MAX_WORKSPACES)),
            idle_s=_positive(env.get("TAKOD_WORKSPACE_IDLE_S"), DEFAULT_IDLE_S),
        )


def _positive(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 and value != float("inf") else default


def to_evict(last_used: Mapping[K, float], pinned: Collection[K], now: float, bounds: Bounds) -> list[K]:
    """The workspaces to let go: every unpinned one idle for ``bounds.idle_s``, then
    the least recently used unpinned ones while more than ``bounds.max_workspaces``
    stay. ``last_used`` maps each loaded workspace to when it was last named."""
    unpinned = sorted((k for k in last_used if k not in pinned), key=last_used.__getitem__)
    idle = [k for k in unpinned if now - last_used[k] >= bounds.idle_s]
    over = len(last_used) - len(idle) - bounds.max_workspaces
    rest = unpinned[len(idle):] if over > 0 else []  # sorted by age: the idle ones come first
    return idle + rest[:max(over, 0)]
