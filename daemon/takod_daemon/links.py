"""Credentials shared between stores: the workspace pi copy and the Codex <-> pi login.

- A Tako workspace's pi ``auth.json`` is seeded from the home one only when it is
  missing or empty (never overwritten).
- Codex's ChatGPT login and pi's ``openai-codex`` entry are one grant (OpenAI
  refresh tokens are single use): whichever side holds the newer token is
  copied to the other, under pi's lock for pi's file and compare-before-write
  for Codex's. An older token never replaces a newer one.

Blocking functions: the state manager runs them in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import structlog

from takod.paths import is_marked_workspace

from .credentials import codex_auth, codex_link, pi_auth
from .credentials.files import FileProblem
from .credentials.codex_lock import codex_lock
from .credentials.pi_lock import LockError, pi_locks

log = structlog.get_logger("takod.links")

# A refresh of the same login holds these locks from its re-read to its write
# (its token request included, at most refresh.grants.LOCKED_REQUEST_TIMEOUT_S):
# wait it out rather than copy a token being spent or give up seeding.
LOCK_TIMEOUT = 20.0


def is_tako_workspace(root: Path) -> bool:
    """Only real workspaces get a pi copy: a directory with Tako's markers, or one
    whose pi runtime Takobot already set up. A bare ``.tako/`` (e.g. left by
    ``takod prefer`` in the home directory) does not count."""
    return is_marked_workspace(root) or (root / ".tako" / "pi").is_dir()


def sync_workspace(root: Path, env: Mapping[str, str], home: Path) -> list[str]:
    """Seed and link ``root``'s pi auth file; returns what was written (for logs)."""
    if not is_tako_workspace(root):
        return []
    done: list[str] = []
    target = pi_auth.workspace_auth_path(root)
    try:
        seeded = pi_auth.seed_workspace_auth(target, pi_auth.home_auth_paths(env, home), lock_timeout=LOCK_TIMEOUT)
        if seeded.outcome == "seeded":
            done.append(f"seeded {target} from {seeded.source}")
    except (FileProblem, LockError, OSError) as exc:
        log.warning("could not seed the workspace pi auth file", path=str(target), error=str(exc))
    done += link_codex(target, env)
    return done


def link_codex(pi_file: Path, env: Mapping[str, str]) -> list[str]:
    """Bring Codex's login and ``pi_file``'s ``openai-codex`` entry onto the newest tokens."""
    home = codex_auth.codex_home(env)
    try:
        store = codex_auth.read_store_mode(home)
        if store not in ("file", "auto"):
            return []
        codex = codex_auth.read_auth(codex_auth.auth_path(home))
        pi = pi_auth.read_auth(pi_file)
        entry = pi.entries.get(codex_link.PI_PROVIDER) if pi else None
        if codex is None or codex_link.decide(codex, entry, int(time.time() * 1000)).action == "none":
            return []  # the usual case: nothing to copy, no lock taken
        pi_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Both stores' locks, Codex's first (the order every takod holder uses), and
        # both files re-read under them: never copy a token a refresh is spending.
        with codex_lock(home, timeout=LOCK_TIMEOUT), pi_locks([pi_file], timeout=LOCK_TIMEOUT) as held:
            codex = codex_auth.read_auth(codex_auth.auth_path(home))
            decision = codex_link.apply_to_pi(pi_file, codex, lock_timeout=LOCK_TIMEOUT, held=held[pi_file])
            if decision.action == "update_pi":
                return [f"copied the Codex login into {pi_file} ({decision.reason})"]
            if decision.action == "update_codex" and decision.codex_update and decision.codex_replaces:
                if codex_auth.file_is_writable(store) and codex_auth.write_refreshed_tokens(
                    home, decision.codex_update, decision.codex_replaces
                ):
                    return [f"copied pi's newer openai-codex tokens into {codex_auth.auth_path(home)}"]
    except (FileProblem, LockError, OSError) as exc:
        log.warning("could not link the Codex and pi logins", pi_file=str(pi_file), error=str(exc))
    return []
