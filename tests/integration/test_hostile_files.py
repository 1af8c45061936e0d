"""A real daemon whose credential and settings files turn hostile under it.

Each file starts valid; then every file is overwritten at once with one kind of
bad content (truncated, wrong-typed, nested 5000 deep, non-UTF-8, over the
size cap, a symlink to a directory). The daemon must report each file as a
problem, keep serving the last good credentials and settings, leave the files
exactly as written, and never log their content. A BOM-prefixed new version is
then picked up. The per-reader details are in tests/unit/test_credential_readers_hostile.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from takod_daemon.credentials.files import MAX_FILE_BYTES
from tests.harness import DaemonProcess, wait_for
from tests.procfs import alive
from tests.rawrpc import RawConn

CANARY = "canary-hostile-5d1c"
JWT = "eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDAsImVtYWlsIjoiYUBiLmMifQ.sig"  # exp 2100


def files_of(home: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Source name -> (path, valid document)."""
    return {
        "codex": (home / ".codex" / "auth.json",
                  {"auth_mode": "chatgpt", "last_refresh": "2026-01-01T00:00:00Z",
                   "tokens": {"id_token": JWT, "access_token": JWT, "refresh_token": f"rt-{CANARY}", "account_id": "a"}}),
        "claude": (home / ".claude" / ".credentials.json",
                   {"claudeAiOauth": {"accessToken": f"sk-ant-oat-{CANARY}", "refreshToken": f"sk-ant-ort-{CANARY}",
                                      "expiresAt": 4102444800000, "scopes": ["user:inference"]}}),
        "pi": (home / ".pi" / "agent" / "auth.json",
               {"openai": {"type": "api_key", "key": f"sk-{CANARY}"}}),
        "settings": (home / ".tako" / "state" / "inference-settings.json",
                     {"preferred_provider": "ollama", "ollama_model": "llama3"}),
    }


def write(path: Path, data: bytes) -> None:
    if path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # in place, as a tool that is halfway through writing leaves it
        f.write(data)
    os.chmod(path, 0o600)


def as_symlink_to_a_dir(path: Path, _: bytes) -> None:
    target = path.parent / "a-directory"
    target.mkdir(exist_ok=True)
    path.unlink()
    path.symlink_to(target)


def _deep(good: bytes) -> bytes:
    return good[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda good: good[: len(good) // 2],
    # A well-formed document of the wrong type. (Wrong types *inside* a pi entry or the settings are
    # treated as the owning tools do: pi skips the entry, Takobot's rules reset the setting.)
    "wrong_type": lambda good: b"[" + good + b"]",
    "deeply_nested": _deep,
    "non_utf8": lambda good: b"\xff\xfe" + good.decode().encode("utf-16-le"),
    "huge": lambda good: good + b" " * MAX_FILE_BYTES,
}


def snapshot(path: Path) -> bytes | str:
    return os.readlink(path) if path.is_symlink() else path.read_bytes()


def test_bad_files_keep_the_last_good_state_and_stay_untouched(home: Path, daemon_env: dict[str, str]) -> None:
    files = files_of(home)
    for path, doc in files.values():
        write(path, json.dumps(doc).encode())
    daemon = DaemonProcess(home, daemon_env).start()
    try:
        with RawConn(daemon.socket) as conn:
            ids = iter(range(1, 10**6))

            def call(method: str, *params: Any) -> Any:
                reply = conn.call(next(ids), method, *params)
                assert reply[2] is None, reply
                return reply[3]

            def sources() -> set[str]:
                return {c["source"] for c in call("auth.inventory")["credentials"]}

            def problems() -> set[str]:
                return {text.split(": ", 1)[0] for text in call("auth.inventory")["problems"]}

            good_sources = sources()
            for name in ("codex", "claude", "pi"):
                assert str(files[name][0]) in good_sources, name
            assert call("settings.get")["preferred_provider"] == "ollama"
            watched = {str(path) for path, _ in files.values()}

            kinds: list[tuple[str, Callable[[Path, bytes], None]]] = [
                (kind, lambda path, good, make=make: write(path, make(good))) for kind, make in HOSTILE.items()
            ]
            kinds.append(("symlink_to_a_directory", as_symlink_to_a_dir))
            for kind, spoil in kinds:
                written = {}
                for path, doc in files.values():
                    spoil(path, json.dumps(doc).encode())
                    written[path] = snapshot(path)
                wait_for(lambda: problems() >= watched, timeout=20)
                # status is re-evaluated once every changed file has been read: a moment later.
                wait_for(lambda: "settings unusable, using the last good ones" in json.dumps(call("status")), timeout=20)
                # The last good view is kept: the same credentials, the same settings.
                assert sources() == good_sources, kind
                settings = call("settings.get")
                assert settings["preferred_provider"] == "ollama" and settings["problem"], kind
                for path in written:
                    assert snapshot(path) == written[path], f"{kind}: the daemon changed {path}"
                for path, doc in files.values():  # back to good, and the problems clear
                    write(path, json.dumps(doc).encode())
                wait_for(lambda: not problems() & watched, timeout=20)

            # A BOM-prefixed new version is read like any other.
            path, doc = files["settings"]
            write(path, b"\xef\xbb\xbf" + json.dumps({**doc, "preferred_provider": "codex"}).encode())
            wait_for(lambda: call("settings.get")["preferred_provider"] == "codex", timeout=20)
            assert call("settings.get")["problem"] is None
        assert alive(daemon.pid)
        assert CANARY not in daemon.log_text() + daemon.stderr_text()
    finally:
        daemon.stop()
