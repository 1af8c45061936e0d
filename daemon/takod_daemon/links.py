"""Credentials shared between stores: the workspace pi copy and the Codex <-> pi login.

- A Tako workspace's pi ``auth.json`` (where takod runs pi there) is seeded from
  the home one when it is missing or holds no entry (``{}``); a file with an
  entry is never overwritten.
- Codex's ChatGPT login and pi's ``openai-codex`` entry are one grant (OpenAI
  refresh tokens are single use): whichever side holds the newer token is
  copied to the other, under pi's lock for pi's file and compare-before-write
  for Codex's. An older token never replaces a newer one, an implausible token
  or another account's never replaces anything (:mod:`codex_link`), and pi's
  tokens go into Codex's file only from a pi file the user alone controls
  (:func:`source_is_trusted`).

Blocking functions: the state manager runs them in a worker thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import structlog

from takod.paths import is_marked_workspace

from .credentials import codex_auth, codex_link, pi_auth
from .credentials.files import FileProblem, check_dirs
from .credentials.codex_lock import codex_lock
from .credentials.pi_lock import LockError, pi_locks

log = structlog.get_logger("takod.links")

# A refresh of the same login holds these locks from its re-read to its write
# (its token request included, at most refresh.grants.LOCKED_REQUEST_TIMEOUT_S):
# wait it out rather than copy a token being spent or give up seeding.
LOCK_TIMEOUT = 20.0
# Decisions that refuse a "newer" token: worth a warning (a forged or foreign login, or a broken one).
REFUSED = frozenset({"implausible_token", "account_unknown", "different_accounts"})


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
        check_dirs(root, target)
    except (FileProblem, OSError) as exc:  # OSError: a directory we may not even look into
        log.warning("not seeding or linking the workspace pi auth file", path=str(target), error=str(exc))
        return []
    try:
        seeded = pi_auth.seed_workspace_auth(target, pi_auth.home_auth_paths(env, home), lock_timeout=LOCK_TIMEOUT)
        if seeded.outcome == "seeded":
            done.append(f"seeded {target} from {seeded.source}")
    except (FileProblem, LockError, OSError) as exc:
        log.warning("could not seed the workspace pi auth file", path=str(target), error=str(exc))
    done += link_codex(target, env)
    return done


def source_is_trusted(pi_file: Path) -> bool:
    """Whether tokens read from ``pi_file`` may be copied into another store:
    the file (a link's target) is ours and nobody else can write it.

    The file-level floor of the rule "only from trusted stores"; whether a
    workspace is synced at all is the workspace trust rule's decision
    (docs/security.md, "Workspaces").
    """
    try:
        st = os.stat(pi_file)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


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
        if codex is None:
            return []
        first = codex_link.decide(codex, entry, int(time.time() * 1000))
        if first.action == "none":
            if first.reason in REFUSED:
                log.warning("not linking the Codex and pi logins", pi_file=str(pi_file), reason=first.reason)
            return []  # the usual case: nothing to copy, no lock taken
        pi_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Both stores' locks, Codex's first (the order every takod holder uses), and
        # both files re-read under them: never copy a token a refresh is spending.
        with codex_lock(home, timeout=LOCK_TIMEOUT), pi_locks([pi_file], timeout=LOCK_TIMEOUT) as held:
            codex = codex_auth.read_auth(codex_auth.auth_path(home))
            decision = codex_link.apply_to_pi(pi_file, codex, lock_timeout=LOCK_TIMEOUT, held=held[pi_file])
            if decision.reason in REFUSED:
                log.warning("not linking the Codex and pi logins", pi_file=str(pi_file), reason=decision.reason)
            if decision.action == "update_pi":
                return [f"copied the Codex login into {pi_file} ({decision.reason})"]
            if decision.action == "update_codex" and decision.codex_update and decision.codex_replaces:
                if not source_is_trusted(pi_file):
                    log.warning("not copying pi's openai-codex tokens: the file is not the user's alone",
                                pi_file=str(pi_file))
                    return []
                if codex_auth.file_is_writable(store) and codex_auth.write_refreshed_tokens(
                    home, decision.codex_update, decision.codex_replaces
                ):
                    return [f"copied pi's newer openai-codex tokens into {codex_auth.auth_path(home)}"]
    except (FileProblem, LockError, OSError) as exc:
        log.warning("could not link the Codex and pi logins", pi_file=str(pi_file), error=str(exc))
    return []
