"""Workspaces are bounded: the daemon lets idle ones and those beyond its cap go, and loads them again when named.

A real daemon with a small cap (``TAKOD_MAX_WORKSPACES``) or a short idle time
(``TAKOD_WORKSPACE_IDLE_S``); each workspace's settings point Ollama at a fake
server of its own, so which workspaces the daemon still probes is visible.
Watches are counted in /proc (tests/procfs.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fakes.ollama_server import FakeOllama
from tests.harness import DaemonProcess, clean_env, wait_for
from tests.procfs import inotify_watched_inodes, inotify_watches, open_fds
from tests.rawrpc import WAIT


def make_workspace(parent: Path, name: str, ollama: FakeOllama | None = None) -> Path:
    ws = parent / name
    (ws / ".tako" / "state").mkdir(parents=True)
    (ws / "tako.toml").write_text("")
    if ollama is not None:
        (ws / ".tako" / "state" / "inference-settings.json").write_text(json.dumps({"ollama_host": ollama.url}))
    return ws


def dir_inodes(*roots: Path) -> set[int]:
    """The inodes of ``roots`` and every directory under them."""
    return {os.stat(d).st_ino for root in roots for d, _, _ in os.walk(root)}


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    """The daemon's JSON log records of event ``name``."""
    out = []
    for line in daemon.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == name:
            out.append(record)
    return out


def loads_of(daemon: DaemonProcess, ws: Path) -> int:
    return sum(1 for r in events(daemon, "workspace loaded") if r.get("workspace") == str(ws))


def ollama_of(status: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in status["providers"] if p["name"] == "ollama")


@pytest.fixture
def servers() -> Iterator[list[FakeOllama]]:
    started: list[FakeOllama] = []
    try:
        for _ in range(4):
            started.append(FakeOllama().start())
        yield started
    finally:
        for server in started:
            server.stop()


def start(home: Path, **env: str) -> DaemonProcess:
    return DaemonProcess(home, clean_env(home, **env)).start()


def test_beyond_the_cap_the_least_recently_used_are_let_go_and_come_back_intact(
    home: Path, servers: list[FakeOllama]
) -> None:
    spaces = [make_workspace(home, f"w{i}", servers[i]) for i in range(4)]
    daemon = start(home, TAKOD_MAX_WORKSPACES="3")  # the default workspace (home) and two more
    try:
        with daemon.client() as c:
            for ws in spaces:
                assert ollama_of(c.call("status", {"workspace": str(ws)}))["ready"] is True
            # w0 and w1 went, oldest first; their probe loops stopped.
            wait_for(lambda: {r["workspace"] for r in events(daemon, "ollama probe loop stopped")}
                     == {str(ws) for ws in spaces[:2]}, timeout=WAIT)
            # No directory of w0 or w1 is watched any more; w2's and w3's are (the watcher re-arms
            # on its own task, so wait for it to settle).
            def settled() -> bool:
                watched = set(inotify_watched_inodes(daemon.pid))
                return (not watched & dir_inodes(spaces[0], spaces[1])
                        and bool(watched & dir_inodes(spaces[2])) and bool(watched & dir_inodes(spaces[3])))

            wait_for(settled, timeout=WAIT)
            # A probe of everything loaded reaches w2's and w3's servers, never the let-go ones'.
            before = [len(s.requests) for s in servers]
            c.call("providers.probe")
            after = [len(s.requests) for s in servers]
            assert after[0] == before[0] and after[1] == before[1]
            assert after[2] > before[2] and after[3] > before[3]
            # Named again, w0 loads again from its files: its own Ollama, ready, watched again.
            again = c.call("status", {"workspace": str(spaces[0])})
            assert ollama_of(again)["ready"] is True and again["workspace"] == str(spaces[0])
            assert len(servers[0].requests) > after[0]
            # Its settings file is watched again: a change shows in its status.
            settings = spaces[0] / ".tako" / "state" / "inference-settings.json"
            settings.write_text(json.dumps({"ollama_host": servers[0].url, "preferred_provider": "ollama",
                                            "ollama_model": "not-pulled:latest"}))
            wait_for(lambda: ollama_of(c.call("status", {"workspace": str(spaces[0])}))["reason"]
                     == "model-not-pulled", timeout=WAIT)
        assert loads_of(daemon, spaces[0]) == 2
    finally:
        daemon.stop()


def test_idle_workspaces_go_and_watches_and_fds_return_to_where_they_started(home: Path) -> None:
    spaces = [make_workspace(home, f"w{i:02d}") for i in range(20)]
    daemon = start(home, TAKOD_WORKSPACE_IDLE_S="1")
    try:
        with daemon.client() as c:
            c.call("status")
            watches, fds = inotify_watches(daemon.pid), open_fds(daemon.pid)
            for ws in spaces:
                c.call("status", {"workspace": str(ws)})
            assert inotify_watches(daemon.pid) > watches  # the test can fail: they were watched
            wait_for(lambda: inotify_watches(daemon.pid) == watches, timeout=WAIT)
            wait_for(lambda: open_fds(daemon.pid) <= fds, timeout=WAIT)
            # The default workspace is never let go: its status stays warm and correct.
            assert c.call("status")["workspace"] == str(home)
        gone = {ws for r in events(daemon, "workspaces let go") for ws in r["workspaces"]}
        assert gone == {str(ws) for ws in spaces}
        assert loads_of(daemon, home) == 1
    finally:
        daemon.stop()


def test_a_connection_that_said_hello_with_a_workspace_keeps_it(home: Path) -> None:
    mine = make_workspace(home, "mine")
    others = [make_workspace(home, f"o{i}") for i in range(6)]
    daemon = start(home, TAKOD_MAX_WORKSPACES="2", TAKOD_WORKSPACE_IDLE_S="1")
    try:
        with daemon.client(workspace=mine) as editor, daemon.client() as namer:
            assert editor.call("status")["workspace"] == str(mine)
            for ws in others:
                namer.call("status", {"workspace": str(ws)})
            wait_for(lambda: len({ws for r in events(daemon, "workspaces let go") for ws in r["workspaces"]})
                     == len(others), timeout=WAIT)
            assert editor.call("status")["workspace"] == str(mine)
        assert loads_of(daemon, mine) == 1
        gone = {ws for r in events(daemon, "workspaces let go") for ws in r["workspaces"]}
        assert str(mine) not in gone and gone
    finally:
        daemon.stop()


def test_spelling_one_workspace_many_ways_is_bounded_and_answers_stay_right(home: Path) -> None:
    daemon = start(home, TAKOD_MAX_WORKSPACES="2")  # remembers at most 4 * 2 + 64 spellings
    try:
        with daemon.client() as c:
            for i in range(1, 201):
                spelt = str(home) + "/." * i  # one root, 200 spellings
                assert c.call("status", {"workspace": spelt})["workspace"] == str(home)
            assert c.call("status")["workspace"] == str(home)
        forgotten = events(daemon, "workspace spellings forgotten")
        assert forgotten and all(r["count"] <= 4 * 2 + 64 for r in forgotten)
        assert loads_of(daemon, home) == 1  # spellings were forgotten, the workspace never was
    finally:
        daemon.stop()
