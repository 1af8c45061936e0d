"""Warm state follows the files: credential files created after the daemon
started (in directories that did not exist yet), changed in place, replaced
atomically, deleted and recreated; half-written files; CLIs appearing on PATH;
and workspaces loaded on first use, each following its own settings. Every
change must show in ``status`` and reach a subscriber as a ``status`` event.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from takod.schema import API_PROVIDERS

from tests.fakes.ollama_server import FakeOllama
from tests.harness import DaemonProcess
from tests.integration.test_readiness import (
    CANARIES,
    GEMINI_SETTINGS,
    PI_ANTHROPIC_KEY,
    TOOLS_BIN,
    assert_no_canaries,
    claude_credentials_doc,
    codex_auth_doc,
    dumps,
    gemini_oauth_doc,
    next_event,
    pi_auth_doc,
    providers,
    reason_of,
    run_cli,
    start_daemon,
    status,
    stop_later,  # noqa: F401 (fixture)
    subscribe,
    takobot_dumps,
    wait_status,
    write_atomic,
    write_in_place,
    write_json,
)

HOUR = 3600.0


@dataclass(frozen=True)
class Source:
    """One provider's credential file: where it lives and what a live and a dead login look like."""

    provider: str
    path: Callable[[Path], Path]
    live: Callable[[float], bytes]  # content of a usable login expiring at the given time
    dead: Callable[[], bytes]  # a login that expired and cannot be renewed
    setup: Callable[[Path], None] = lambda home: None  # other files the tool keeps beside it


PI_REFRESH = "rt_CANARY_pi_refresh_0123456789abcdef"
CANARIES.append(PI_REFRESH)


def _pi_live(exp: float) -> bytes:
    """pi's auth.json with an Anthropic login, as pi writes it (expires in ms)."""
    entry = {"type": "oauth", "access": PI_ANTHROPIC_KEY, "refresh": PI_REFRESH, "expires": int(exp * 1000)}
    return dumps({"anthropic": entry})


def _pi_dead() -> bytes:
    entry = {"type": "oauth", "access": PI_ANTHROPIC_KEY, "refresh": "", "expires": int((time.time() - HOUR) * 1000)}
    return dumps({"anthropic": entry})


SOURCES = [
    Source(
        "codex",
        lambda home: home / ".codex" / "auth.json",
        lambda exp: dumps(codex_auth_doc(exp, tag=str(int(exp)))),
        lambda: dumps(codex_auth_doc(time.time() - HOUR, refresh=None, tag="dead")),
    ),
    Source(
        "claude",
        lambda home: home / ".claude" / ".credentials.json",
        lambda exp: dumps(claude_credentials_doc(int(exp * 1000))),
        lambda: dumps(claude_credentials_doc(0, access="", refresh="")),
    ),
    Source(
        "gemini",
        lambda home: home / ".gemini" / "oauth_creds.json",
        lambda exp: dumps(gemini_oauth_doc(int(exp * 1000))),
        lambda: dumps({k: v for k, v in gemini_oauth_doc(int((time.time() - HOUR) * 1000)).items() if k != "refresh_token"}),
        setup=lambda home: write_json(home / ".gemini" / "settings.json", GEMINI_SETTINGS),
    ),
    Source(
        "pi",
        lambda home: home / ".tako" / "pi" / "agent" / "auth.json",  # the (default) workspace's pi file
        _pi_live,
        _pi_dead,
    ),
]


def matches(provider: str, reason: str | None, expires_at: float | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(payload: dict[str, Any]) -> bool:
        p = providers(payload)[provider]
        if p["reason"] != reason:
            return False
        if expires_at is not None:
            got = p["detail"].get("credential", {}).get("expires_at")
            return got is not None and abs(got - expires_at) < 1
        return True

    return check


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.provider)
def test_credential_file_lifecycle_is_followed(home: Path, stop_later: list[DaemonProcess], source: Source) -> None:
    path = source.path(home)
    top = home / path.relative_to(home).parts[0]
    d = start_daemon(home, clis=[source.provider])
    stop_later.append(d)
    assert not top.exists()  # the directory is created after the daemon started
    assert reason_of(status(d), source.provider) == "no-credentials"
    sub = subscribe(d, "status")
    try:
        t0 = time.time()
        exps = [t0 + HOUR * k for k in (2, 3, 4, 5, 6)]

        def live(i: int, how: Callable[[Path, bytes], None]) -> Callable[[], None]:
            return lambda: how(path, source.live(exps[i]))

        def dead(how: Callable[[Path, bytes], None]) -> Callable[[], None]:
            return lambda: how(path, source.dead())

        def delete() -> None:
            path.unlink()

        def create(i: int) -> Callable[[], None]:
            def act() -> None:
                source.setup(home)
                write_in_place(path, source.live(exps[i]))

            return act

        def remove_directory() -> None:
            shutil.rmtree(top)

        steps: list[tuple[str, Callable[[], None], str | None, float | None]] = [
            ("created in a new directory", create(0), None, exps[0]),
            ("changed in place", dead(write_in_place), "needs-login", None),
            ("replaced atomically", live(1, write_atomic), None, exps[1]),
            ("replaced atomically again", dead(write_atomic), "needs-login", None),
            ("and again", live(2, write_atomic), None, exps[2]),
            ("deleted", delete, "no-credentials", None),
            ("recreated", live(3, write_in_place), None, exps[3]),
            ("removed with its directory", remove_directory, "no-credentials", None),
            ("created again in a new directory", create(4), None, exps[4]),
        ]
        for what, act, reason, expires_at in steps:
            act()
            check = matches(source.provider, reason, expires_at)
            try:
                payload = next_event(sub, "status", check)
            except AssertionError as exc:
                raise AssertionError(f"{source.provider}: file {what}: {exc}") from None
            assert payload["workspace"] == str(home)
            assert payload["selected"] == (source.provider if reason is None else None)
            assert check(status(d)), f"{source.provider}: status does not show the file {what}"
    finally:
        sub.close()
    assert_no_canaries(d)


def test_half_written_codex_file_keeps_the_last_good_state(home: Path, stop_later: list[DaemonProcess]) -> None:
    path = home / ".codex" / "auth.json"
    first_exp = time.time() + 2 * HOUR
    write_json(path, codex_auth_doc(first_exp))
    d = start_daemon(home, clis=["codex"])
    stop_later.append(d)
    assert reason_of(status(d), "codex") is None
    sub = subscribe(d, "status", "auth")
    try:
        next_exp = time.time() + 6 * HOUR
        whole = dumps(codex_auth_doc(next_exp, tag="next"))
        half = whole[: len(whole) // 2]  # Codex truncates, then writes: a reader can see this
        write_in_place(path, half)

        def reports_problem(payload: dict[str, Any]) -> bool:
            codex = providers(payload)["codex"]
            return any(str(path) in p for p in codex["detail"].get("problems", []))

        payload = next_event(sub, "status", reports_problem)
        codex = providers(payload)["codex"]
        assert codex["ready"], "the last good login must be kept"
        assert codex["detail"]["credential"]["expires_at"] == pytest.approx(int(first_exp))
        assert payload["selected"] == "codex"
        with d.client() as c:
            inv = c.call("auth.inventory")
            st = c.call("status")
        assert any(str(path) in p and "JSON" in p for p in inv["problems"]), inv["problems"]
        assert [x["wins"] for x in inv["credentials"] if x["provider"] == "codex"] == [True]
        assert any(str(path) in p for p in providers(st)["codex"]["detail"]["problems"])
        assert path.read_bytes() == half, "takod must never write a file it could not parse"

        cli = run_cli(d, "auth")
        assert cli.returncode == 0 and str(path) in cli.stdout

        write_in_place(path, whole)  # the writer finishes
        payload = next_event(sub, "status", lambda p: matches("codex", None, next_exp)(p)
                             and not providers(p)["codex"]["detail"].get("problems"))
        with d.client() as c:
            assert c.call("auth.inventory")["problems"] == []
        assert path.read_bytes() == whole
    finally:
        sub.close()
    assert_no_canaries(d, inv, st, cli.stdout, payload)


def test_wrong_shape_codex_file_is_reported_and_left_alone(home: Path, stop_later: list[DaemonProcess]) -> None:
    path = home / ".codex" / "auth.json"
    write_json(path, codex_auth_doc(time.time() + HOUR))
    d = start_daemon(home, clis=["codex"])
    stop_later.append(d)
    bad = b'{"auth_mode": "chatgpt", "tokens": ["not", "an", "object"], "last_refresh": 7}\n'
    write_atomic(path, bad)
    st = wait_status(d, lambda s: bool(providers(s)["codex"]["detail"].get("problems")))
    assert providers(st)["codex"]["ready"]
    with d.client() as c:
        problems = c.call("auth.inventory")["problems"]
    assert any(str(path) in p for p in problems)
    assert path.read_bytes() == bad


def test_unparsable_codex_file_at_start_is_credentials_unreadable(home: Path, stop_later: list[DaemonProcess]) -> None:
    path = home / ".codex" / "auth.json"
    write_in_place(path, b'{"OPENAI_API_KEY": null, "tokens": {"access_tok')
    d = start_daemon(home, clis=["codex"])
    stop_later.append(d)
    codex = providers(status(d))["codex"]
    assert (codex["reason"], codex["level"]) == ("credentials-unreadable", "installed")
    assert any(str(path) in p for p in codex["detail"]["problems"])
    assert path.read_bytes() == b'{"OPENAI_API_KEY": null, "tokens": {"access_tok'


def test_a_cli_installed_after_start_is_found(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home)  # PATH holds node only
    stop_later.append(d)
    assert reason_of(status(d), "codex") == "not-installed"
    sub = subscribe(d, "status")
    try:
        (home / "bin" / "codex").symlink_to(TOOLS_BIN / "codex")
        payload = next_event(sub, "status", lambda p: providers(p)["codex"]["level"] == "installed")
        assert providers(payload)["codex"]["detail"]["path"] == str(home / "bin" / "codex")
        (home / "bin" / "codex").unlink()
        next_event(sub, "status", lambda p: providers(p)["codex"]["reason"] == "not-installed")
    finally:
        sub.close()


def test_ollama_started_later_is_found_by_a_probe(home: Path, stop_later: list[DaemonProcess]) -> None:
    with FakeOllama(mode="refuse") as ollama:
        d = start_daemon(home, OLLAMA_HOST=ollama.host)
        stop_later.append(d)
        assert reason_of(status(d), "ollama") == "unreachable"
        sub = subscribe(d, "status")
        try:
            ollama.set_mode("ok")
            out = run_cli(d, "probe", "--json")
            assert out.returncode == 0, out.stderr
            assert providers(json.loads(out.stdout))["ollama"]["ready"]
            next_event(sub, "status", lambda p: providers(p)["ollama"]["ready"])
            ollama.set_mode("refuse")
            with d.client() as c:
                st = c.call("providers.probe")
            assert reason_of(st, "ollama") == "unreachable"
        finally:
            sub.close()


# --- workspaces -------------------------------------------------------------------------


def settings_doc(**fields: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"api_keys": {}, "ollama_host": "", "ollama_model": "", "preferred_provider": "auto",
                           "type1_model": "", "type2_model": ""}
    doc.update(fields)
    return doc


def write_settings(ws: Path, how: Callable[[Path, bytes], None] = write_in_place, **fields: str) -> Path:
    path = ws / ".tako" / "state" / "inference-settings.json"
    how(path, takobot_dumps(settings_doc(**fields)))
    return path


def test_a_second_workspace_loads_on_first_use_and_follows_its_own_files(
    home: Path, stop_later: list[DaemonProcess]
) -> None:
    # Claude and Gemini logins (no Codex one: takod would link that into every workspace's pi).
    write_json(home / ".claude" / ".credentials.json", claude_credentials_doc(int((time.time() + 5 * HOUR) * 1000)))
    write_json(home / ".gemini" / "settings.json", GEMINI_SETTINGS)
    write_json(home / ".gemini" / "oauth_creds.json", gemini_oauth_doc(int((time.time() + 5 * HOUR) * 1000)))
    other = home / "work" / "other"
    other.mkdir(parents=True)
    (other / "tako.toml").write_text("")
    write_settings(other, preferred_provider="gemini")
    with FakeOllama(mode="refuse") as dead:
        d = start_daemon(home, clis=["pi", "claude", "gemini"], OLLAMA_HOST=dead.host)
        stop_later.append(d)
        default = status(d)
        assert (default["workspace"], default["selected"]) == (str(home), "claude")
        assert str(other) not in d.log_text()  # not loaded before anyone names it

        sub = subscribe(d, "status")
        try:
            st = status(d, other)  # loads it
            assert (st["workspace"], st["selected"]) == (str(other), "gemini")

            # Takobot rewrites the other workspace's settings in place.
            write_settings(other, preferred_provider="claude")
            payload = next_event(sub, "status", lambda p: p["workspace"] == str(other) and p["selected"] == "claude")
            assert status(d, other)["selected"] == "claude"

            # ... and the default workspace's settings, atomically this time.
            write_settings(home, write_atomic, preferred_provider="gemini")
            next_event(sub, "status", lambda p: p["workspace"] == str(home) and p["selected"] == "gemini")
            assert status(d)["selected"] == "gemini"
            assert status(d, other)["selected"] == "claude"

            # A pi login in the other workspace only: pi is ready there, not in the default one.
            assert reason_of(status(d, other), "pi") == "no-credentials"
            write_json(other / ".tako" / "pi" / "agent" / "auth.json", pi_auth_doc())
            payload = next_event(sub, "status", lambda p: p["workspace"] == str(other) and providers(p)["pi"]["ready"])
            assert payload["selected"] == "claude"  # still preferred and ready
            assert reason_of(status(d), "pi") == "no-credentials"
            write_settings(other, preferred_provider="auto")
            next_event(sub, "status", lambda p: p["workspace"] == str(other) and p["selected"] == "pi")
            assert status(d)["selected"] == "gemini"
        finally:
            sub.close()

        # A connection that names its workspace in hello gets it without naming it again.
        third = home / "third"
        third.mkdir()
        (third / "tako.toml").write_text("")
        write_settings(third, preferred_provider="gemini")
        with d.client(workspace=str(third)) as c:
            st = c.call("status")
            assert (st["workspace"], st["selected"]) == (str(third), "gemini")
            assert c.call("settings.get")["preferred_provider"] == "gemini"
        # The CLI finds the workspace from its working directory.
        out = run_cli(d, "status", "--json", cwd=third / ".tako")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["workspace"] == str(third)
    assert_no_canaries(d, payload)


def test_a_broken_settings_file_keeps_the_last_good_settings(home: Path, stop_later: list[DaemonProcess]) -> None:
    write_json(home / ".codex" / "auth.json", codex_auth_doc(time.time() + 5 * HOUR))
    write_json(home / ".claude" / ".credentials.json", claude_credentials_doc(int((time.time() + 5 * HOUR) * 1000)))
    path = write_settings(home, preferred_provider="claude")
    d = start_daemon(home, clis=["codex", "claude"])
    stop_later.append(d)
    assert status(d)["selected"] == "claude"
    write_in_place(path, b'{"preferred_provider": "co')
    st = wait_status(d, lambda s: any("settings" in w for w in providers(s)["codex"]["detail"].get("warnings", [])))
    assert st["selected"] == "claude"
    with d.client() as c:
        assert c.call("settings.get")["problem"]
        assert any(str(path) in p for p in c.call("auth.inventory")["problems"])
    assert path.read_bytes() == b'{"preferred_provider": "co'
    write_settings(home, preferred_provider="codex")
    st = wait_status(d, lambda s: s["selected"] == "codex")
    assert not providers(st)["codex"]["detail"].get("warnings")


def test_workspace_must_be_absolute_in_hello(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    from takod.client import RemoteError

    with pytest.raises(RemoteError) as err, d.client(workspace="relative/dir") as c:
        c.call("ping")
    assert (err.value.kind, err.value.code) == (1, "invalid_params")
    assert status(d)["workspace"] == str(home)  # nothing was loaded for it
    assert not any("relative" in line and "workspace loaded" in line for line in d.log_text().splitlines())


def test_concurrent_first_requests_for_a_workspace_all_see_it_loaded(
    home: Path, stop_later: list[DaemonProcess]
) -> None:
    write_json(home / ".claude" / ".credentials.json", claude_credentials_doc(int((time.time() + 5 * HOUR) * 1000)))
    d = start_daemon(home, clis=["pi", "claude"])
    stop_later.append(d)
    for n in range(3):
        ws = home / f"ws{n}"
        ws.mkdir()
        (ws / "tako.toml").write_text("")
        write_settings(ws, preferred_provider="claude")
        with d.client() as c:
            ids = [c.send("status", {"workspace": str(ws)}) for _ in range(8)]  # pipelined: served concurrently
            answers = [c.wait(i) for i in ids]
        for st in answers:
            assert st["workspace"] == str(ws)
            assert [p["name"] for p in st["providers"]] == ["pi", "ollama", "codex", "claude", "gemini", *API_PROVIDERS]
            assert st["selected"] == "claude"
    assert status(d)["selected"] == "claude"  # and the daemon is still there
