"""Seeding a workspace pi file copies its source only under the source's pi lock
too (a refresh holds it from its re-read to its write), and several pi locks are
taken in one order."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from takod_daemon.credentials import pi_auth
from takod_daemon.credentials.pi_lock import LockTimeout, pi_lock, pi_locks


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_a_seed_waits_for_the_sources_lock_and_copies_what_it_holds_then(tmp_path: Path) -> None:
    home = write(tmp_path / "home/auth.json", {"anthropic": {"type": "oauth", "access": "a", "refresh": "spent",
                                                             "expires": 1}})
    ws = tmp_path / "ws/.tako/pi/agent/auth.json"
    with pi_lock(home, timeout=1):  # a refresh of the home login is under way
        with pytest.raises(LockTimeout):
            pi_auth.seed_workspace_auth(ws, [home], lock_timeout=0.2)
        assert not ws.exists()

    # A seed started while the refresh holds the lock waits, then copies the new token.
    seeded: list[pi_auth.SeedResult] = []
    with pi_lock(home, timeout=1):
        t = threading.Thread(target=lambda: seeded.append(pi_auth.seed_workspace_auth(ws, [home], lock_timeout=10)))
        t.start()
        write(home, {"anthropic": {"type": "oauth", "access": "b", "refresh": "live", "expires": 2}})
        assert not ws.exists()  # still waiting for the source's lock
    t.join(20)
    assert [r.outcome for r in seeded] == ["seeded"]
    assert json.loads(ws.read_text())["anthropic"]["refresh"] == "live"


def test_overlapping_sets_of_pi_locks_never_wait_on_each_other_in_a_circle(tmp_path: Path) -> None:
    a = write(tmp_path / "a/auth.json", {})
    b = write(tmp_path / "b/auth.json", {})
    errors: list[BaseException] = []

    def take(order: list[Path]) -> None:
        try:
            for _ in range(30):
                with pi_locks(order, timeout=10) as held:
                    assert set(held) == set(order)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(order,)) for order in ([a, b], [b, a])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
