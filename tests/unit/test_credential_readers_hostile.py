"""Every credential and settings file reader, fed hostile files.

Truncated, wrong-typed, huge, deeply nested, non-UTF-8, BOM-prefixed and
symlinked files: each reader either reads the file or raises a FileProblem
(the daemon then keeps its last good view; tests/integration/test_hostile_files.py
proves that end to end). Nothing else may escape: before the fix a file nested
5000 levels deep raised RecursionError out of msgspec and killed the daemon.
The file is never changed (bytes and mode), and no problem message quotes
the file's content.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from takod_daemon import keystore
from takod_daemon.credentials import claude_auth, codex_auth, gemini_auth, pi_auth, settings
from takod_daemon.credentials.files import MAX_FILE_BYTES, FileProblem
from takod_daemon.providers import detect

CANARY = "canary-7f3a9e"  # in every file: no problem message may repeat it
# A JWT that expires in 2100 (payload {"exp": 4102444800, "email": "a@b.c"}).
JWT = "eyJhbGciOiJub25lIn0.eyJleHAiOjQxMDI0NDQ4MDAsImVtYWlsIjoiYUBiLmMifQ.sig"
REASONS = {"unreadable", "not_a_file", "too_large", "empty", "invalid", "malformed", "too_deep"}


def env_of(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "CODEX_HOME": str(home / ".codex")}


@dataclass
class Reader:
    name: str
    path: str  # relative to the temporary home
    valid: Any  # a document the reader accepts (dict: JSON; str: the file's text)
    read: Callable[[Path], Any]
    needs: dict[str, Any] | None = None  # other files that must exist for this one to be read at all
    swallows: bool = False  # problems mean "no label" / "rebuild": the reader returns, never raises


def _pi(home: Path) -> Any:
    auth = pi_auth.read_auth(home / ".pi/agent/auth.json")
    return pi_auth.summarize(auth, {}) if auth is not None else None


READERS = [
    Reader("codex auth.json", ".codex/auth.json",
           {"auth_mode": "chatgpt", "tokens": {"id_token": JWT, "access_token": JWT, "refresh_token": CANARY,
                                               "account_id": "acc"}, "last_refresh": "2025-01-01T00:00:00Z"},
           lambda h: codex_auth.discover(env_of(h))),
    Reader("codex config.toml", ".codex/config.toml", f'cli_auth_credentials_store = "file"\n# {CANARY}\n',
           lambda h: codex_auth.discover(env_of(h)),
           needs={".codex/auth.json": {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x"}}),
    Reader("claude .credentials.json", ".claude/.credentials.json",
           {"claudeAiOauth": {"accessToken": CANARY, "refreshToken": "sk-ant-ort", "expiresAt": 4102444800000,
                              "scopes": ["user:inference"], "subscriptionType": "pro"}},
           lambda h: claude_auth.discover(env_of(h), platform="linux")),
    Reader("claude .claude.json (account label)", ".claude.json", {"oauthAccount": {"emailAddress": CANARY}},
           lambda h: claude_auth.discover(env_of(h), platform="linux"),
           needs={".claude/.credentials.json": {"claudeAiOauth": {"accessToken": "a", "refreshToken": "r",
                                                                   "expiresAt": 4102444800000}}},
           swallows=True),
    Reader("gemini settings.json", ".gemini/settings.json",
           {"security": {"auth": {"selectedType": "oauth-personal"}}, "x": CANARY},
           lambda h: gemini_auth.discover(env_of(h)),
           needs={".gemini/oauth_creds.json": {"access_token": "ya29.x", "refresh_token": "1//r",
                                               "expiry_date": 4102444800000}}),
    Reader("gemini oauth_creds.json", ".gemini/oauth_creds.json",
           {"access_token": CANARY, "refresh_token": "1//r", "expiry_date": 4102444800000, "token_type": "Bearer"},
           lambda h: gemini_auth.discover(env_of(h)),
           needs={".gemini/settings.json": {"security": {"auth": {"selectedType": "oauth-personal"}}}}),
    Reader("pi auth.json", ".pi/agent/auth.json",
           {"anthropic": {"type": "oauth", "access": CANARY, "refresh": "r", "expires": 4102444800000},
            "openai": {"type": "api_key", "key": "sk-x"}},
           _pi),
    Reader("workspace inference-settings.json", "ws/.tako/state/inference-settings.json",
           {"preferred_provider": "pi", "ollama_model": "m", "api_keys": {"OPENAI_API_KEY": CANARY}},
           lambda h: settings.load_settings(h / "ws/.tako/state/inference-settings.json")),
    Reader("keystore keys.json", "state/keys.json", {"version": 1, "keys": {"OPENAI_API_KEY": CANARY}},
           lambda h: keystore._Files(h / "state").read_keys()),
    Reader("keystore key-index.json", "state/key-index.json", {"version": 1, "names": ["OPENAI_API_KEY"], "x": CANARY},
           lambda h: keystore._Files(h / "state").read_index(), swallows=True),
    Reader("CLI package.json", "pkg/package.json", {"name": CANARY, "version": "1.0.0", "bin": {"x": "cli.js"}},
           lambda h: detect._load_manifest(h / "pkg/package.json"), swallows=True),
]


def encoded(doc: Any) -> bytes:
    return doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def wrong_typed(valid: Any) -> Iterator[bytes]:
    """Each key (and each key one level down) set to every JSON type in turn."""
    bad_values: list[Any] = [1, -1, 1e308, -1e308, 2**70, -(2**70), 0.5, [], [[[]]], "x", "", None, {}, True,
                             {"a": {"b": 1}}]
    if not isinstance(valid, dict):
        for v in bad_values:
            yield f"cli_auth_credentials_store = {json.dumps(v) if v is not None else '[]'}\n".encode()
        return
    for key, value in valid.items():
        for bad in bad_values:
            yield json.dumps({**valid, key: bad}).encode()
        if isinstance(value, dict):
            for inner in value:
                for bad in bad_values:
                    yield json.dumps({**valid, key: {**value, inner: bad}}).encode()


def hostile(valid: Any) -> dict[str, list[bytes]]:
    """Case name -> file contents. ``valid`` and ``bom`` must be read; the rest may be refused."""
    good = encoded(valid)
    is_json = not isinstance(valid, str)
    nested_in_key = (json.dumps(valid)[:-1] + f', "deep": {deep(5000)}}}').encode() if is_json \
        else f"a = {deep(5000)}\n".encode()
    return {
        "truncated": [good[: len(good) // 2], good[:1], good[:-1]],
        "empty": [b"", b" \n\t ", b"\xef\xbb\xbf"],
        "nul_bytes": [b"\x00" * 16, good[:5] + b"\x00" + good[5:]],
        "non_utf8": [good.replace(b'"', b'"\xff', 1) if is_json else b'x = "\xff"\n', b"\xff\xfe" + good.decode().encode("utf-16-le"),
                     good.decode().encode("utf-16")],
        "wrong_top_level": [b"1", b"[]", b'"x"', b"null", b"true", b"1e999", b"-0", b"[" + good + b"]"],
        "wrong_types": list(wrong_typed(valid)),
        "deeply_nested": [deep(100_000).encode(), nested_in_key, (deep(900) if is_json else "a = 1").encode()],
        "huge": [b" " * (MAX_FILE_BYTES + 1) + good, b"[" + b"1," * (MAX_FILE_BYTES // 2) + b"1]"],
        "big_but_allowed": [(json.dumps(valid)[:-1] + f', "big": "{"x" * (3 * 1024 * 1024)}"}}').encode() if is_json
                            else good + b"# " + b"x" * (3 * 1024 * 1024) + b"\n"],
        "valid": [good],
        "bom": [b"\xef\xbb\xbf" + good],
    }


def write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def snapshot(path: Path) -> tuple[bool, bytes | str, int]:
    """What must not change: whether it is a link, its bytes (or link target), its mode."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return True, os.readlink(path), st.st_mode
    return False, path.read_bytes(), st.st_mode


def read_checked(reader: Reader, home: Path, path: Path) -> tuple[str, Any]:
    """Run the reader; ('ok', result) or ('problem', reason). Anything else fails the test."""
    before = snapshot(path)
    try:
        result = reader.read(home)
        outcome: tuple[str, Any] = ("ok", result)
    except FileProblem as problem:
        assert problem.reason in REASONS, problem.reason
        assert CANARY not in str(problem) and CANARY not in problem.detail
        outcome = ("problem", problem.reason)
    assert snapshot(path) == before, "the reader changed the file"
    return outcome


def setup(reader: Reader, home: Path) -> Path:
    for rel, doc in (reader.needs or {}).items():
        write(home / rel, encoded(doc))
    return home / reader.path


@pytest.mark.parametrize("case", list(hostile({"k": 1})))
@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_hostile_content_is_read_or_a_file_problem(reader: Reader, case: str, tmp_path: Path) -> None:
    for i, data in enumerate(hostile(reader.valid)[case]):
        home = tmp_path / str(i)
        path = setup(reader, home)
        write(path, data)
        kind, result = read_checked(reader, home, path)
        if case in ("valid", "bom", "big_but_allowed"):
            assert kind == "ok", f"{case} must be read, got {result}"
            if not reader.swallows and case != "big_but_allowed":
                assert result, "a valid file gives its credentials or settings"
        elif case in ("huge", "deeply_nested", "truncated") and not reader.swallows and i == 0:
            assert kind == "problem", f"{case} must be refused, got {result!r}"[:300]


def test_keys_file_with_loose_mode_is_fixed_but_its_bytes_are_not_touched(tmp_path: Path) -> None:
    # The one deliberate change any reader makes: the plaintext key file goes back to 0600.
    path = tmp_path / "state" / "keys.json"
    write(path, encoded({"version": 1, "keys": {"OPENAI_API_KEY": "sk-x"}}), mode=0o644)
    data = path.read_bytes()
    assert keystore._Files(tmp_path / "state").read_keys() == {"OPENAI_API_KEY": "sk-x"}
    assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == 0o600


def _to_valid(home: Path, path: Path) -> None:
    path.symlink_to(home / "elsewhere" / "real.json")


def _to_dir(home: Path, path: Path) -> None:
    (home / "adir").mkdir()
    path.symlink_to(home / "adir")


def _to_fifo(home: Path, path: Path) -> None:
    os.mkfifo(home / "fifo")
    path.symlink_to(home / "fifo")


def _loop(home: Path, path: Path) -> None:
    path.symlink_to(path.with_name("loop2"))
    path.with_name("loop2").symlink_to(path)


LINKS: list[tuple[str, Callable[[Path, Path], None], str]] = [
    ("to a valid file (dotfile managers link these)", _to_valid, "ok"),
    ("to a directory", _to_dir, "problem"),
    ("to /dev/zero", lambda home, path: path.symlink_to("/dev/zero"), "problem"),
    ("to a FIFO nobody writes", _to_fifo, "problem"),
    ("in a loop", _loop, "problem"),
    ("dangling (the file is absent)", lambda home, path: path.symlink_to(home / "nowhere.json"), "ok"),
]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_symlinked_files(reader: Reader, tmp_path: Path) -> None:
    for i, (name, make, expected) in enumerate(LINKS):
        home = tmp_path / str(i)
        path = setup(reader, home)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = home / "elsewhere" / "real.json"
        write(target, encoded(reader.valid))
        make(home, path)
        kind, result = read_checked(reader, home, path)
        assert target.read_bytes() == encoded(reader.valid)
        if not reader.swallows:
            assert kind == expected, f"symlink {name}: {kind} {result!r}"[:300]


def test_codex_tokens_whose_jwt_payload_is_nested_too_deeply_are_a_token_problem(tmp_path: Path) -> None:
    import base64

    payload = base64.urlsafe_b64encode(deep(5000).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJub25lIn0.{payload}.sig"
    write(tmp_path / ".codex" / "auth.json", encoded({"tokens": {"access_token": token, "refresh_token": "r"}}))
    auth = codex_auth.read_auth(tmp_path / ".codex" / "auth.json")
    assert auth is not None and auth.token_problem and "not JSON" in auth.token_problem
