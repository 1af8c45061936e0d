"""A real daemon whose network peers answer hostile bodies: Ollama (probe loop,
prompts, embeddings, model lists), a token endpoint (the refresh broker) and a
login server. The daemon keeps serving, says what failed in the classified way,
leaves the credential files as they were, and logs no secret and no error.

Before the fix each of the first three bodies below ended the daemon: msgspec
raised ``RecursionError`` (or ``int()`` an ``OverflowError``) out of the probe
loop, the broker or a login task, and the task group took the daemon down.
tests/integration/test_hostile_peers.py feeds every decoder the whole catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from takod import RemoteError
from tests.fakes.http_base import Canned
from tests.fakes.login_server import FakeLoginServer
from tests.fakes.ollama_server import FakeOllama
from tests.harness import DaemonProcess, clean_env, wait_for
from tests.integration.test_login import UNKNOWN, _events, _start
from tests.integration.test_refresh_broker import (  # noqa: F401 - the world fixture
    ANTHROPIC_CANARY,
    WAIT,
    World,
    assert_no_secrets,
    grant_of,
    pi_dumps,
    pi_entry,
    world,
    write_in_place,
)

MiB = 1024 * 1024
DEEP = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # nested under a field every reader ignores
HOSTILE = {
    "deeply_nested": DEEP,
    "deeply_nested_top": b"[" * 100_000,
    "not_utf8": b'{"version": "\xff\xfe", "models": [{"name": "\xff"}]}',
    "huge": b'{"pad": "' + b"x" * (40 * MiB) + b'"}',
}


def alive(d: DaemonProcess) -> None:
    """The daemon still runs and answers."""
    assert d.proc is not None and d.proc.poll() is None, f"the daemon died: {d.stderr_text()[-2000:]}"
    with d.client() as c:
        assert c.call("ping") == "pong"


def clean_log(d: DaemonProcess, *secrets: str) -> None:
    text = d.log_text() + d.stderr_text()
    for secret in secrets:
        assert secret not in text, "a secret reached the daemon's log"
    assert '"level": "error"' not in text and "Traceback" not in text, text[-3000:]


# --- Ollama ---------------------------------------------------------------------------------


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(chunk_delay=0.01, mode="refuse") as server:
        yield server


def ollama_status(d: DaemonProcess) -> dict[str, Any]:
    with d.client() as c:
        return next(p for p in c.call("status")["providers"] if p["name"] == "ollama")


def test_ollama_answering_hostile_bodies(home: Path, workspace: Path, ollama: FakeOllama) -> None:
    env = clean_env(home, TAKO_WORKSPACE=str(workspace), OLLAMA_HOST=ollama.host, PATH="/usr/bin:/bin")
    d = DaemonProcess(home, env).start()
    try:
        with d.client() as c:
            c.call("status")  # loads the workspace: Ollama refuses, so its probe loop comes back in 5 s
        # The loop's next probe meets a version answer nested 100 000 levels deep.
        ollama.answer_with(Canned(DEEP), path="/api/version")
        ollama.set_mode("ok")
        wait_for(lambda: ollama_status(d)["reason"] == "bad-response", timeout=WAIT)
        alive(d)
        ollama.answer_with(None)
        for name, body in HOSTILE.items():  # and each body through providers.probe
            ollama.answer_with(Canned(body), path="/api/tags")
            with d.client() as c:
                c.call("providers.probe")
            status = ollama_status(d)
            assert status["reason"] == "bad-response" and "Ollama" in str(status["detail"]["error"]), (name, status)
            ollama.answer_with(None)
        with d.client() as c:
            c.call("providers.probe")
        wait_for(lambda: ollama_status(d)["ready"], timeout=WAIT)

        good = b'{"model": "llama3.2:latest", "message": {"role": "assistant", "content": "Hi "}, "done": false}\n'
        for name, body in HOSTILE.items():
            # As a stream line: a huge one past the 16 MiB line limit, bad bytes in a field Ollama's lines have.
            line = {"huge": b"x" * (20 * MiB), "not_utf8": b'{"model": "\xff\xfe"}'}.get(name, body)
            ollama.answer_with(Canned(lambda line=line: iter([good, line + b"\n"]),
                                      content_type="application/x-ndjson"), path="/api/chat")
            with d.client() as c, pytest.raises(RemoteError) as failed:
                c.call("infer", {"prompt": "hello", "provider": "ollama"})
            assert failed.value.code in ("provider_failed", "no_provider"), (name, failed.value)
            assert "crashed" in str(failed.value) and "internal" not in str(failed.value), (name, failed.value)
            ollama.answer_with(Canned(body), path="/api/embed")
            with d.client() as c, pytest.raises(RemoteError) as failed:
                c.call("embed", {"texts": ["a"], "provider": "ollama"})
            assert failed.value.code == "provider_failed", (name, failed.value)
            ollama.answer_with(None)
            ollama.answer_with(Canned(body), path="/api/tags")
            with d.client() as c:
                listed = c.call("models.list", {"provider": "ollama"})
            assert listed["models"] == [] and "crashed" in listed["errors"]["ollama"], (name, listed)
            ollama.answer_with(None)
            alive(d)
        with d.client() as c:  # and it still answers prompts
            assert c.call("infer", {"prompt": "hello", "provider": "ollama"})["text"] == ollama.reply
    finally:
        d.stop()
    clean_log(d)


# --- the refresh broker ---------------------------------------------------------------------


ANSWERS = {
    "deeply_nested": (DEEP, "needs-login"),
    "lifetime_overflows": (b'{"access_token": "sk-ant-oat01-new", "refresh_token": "sk-ant-ort01-new", '
                           b'"expires_in": 1e308}', "needs-login"),
    "huge": (HOSTILE["huge"], "retrying"),
    "not_utf8": (b'{"access_token": "\xff"}', "retrying"),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_token_endpoint_answering_hostile_bodies(world: World, answer: str) -> None:
    body, state = ANSWERS[answer]
    srv = world.server
    g = srv.add_grant("g", "anthropic", refresh_token=ANTHROPIC_CANARY, lifetime_s=3600)
    write_in_place(world.ws_pi, pi_dumps({"anthropic": pi_entry(g, expires_in=120)}))  # due at once
    before = world.ws_pi.read_bytes()
    srv.answer_with(Canned(body), path="/anthropic/v1/oauth/token")
    d = world.start()
    info = wait_for(lambda: (x := grant_of(d, "anthropic", ANTHROPIC_CANARY)) and x["state"] == state and x, WAIT)
    if state == "needs-login":  # JSON from the endpoint that is no token answer: a retry would spend the token
        assert info["last_error"] == "malformed_response" and "takod login anthropic" in info["guidance"]
    else:  # nothing we could read: the old token still works, try again later
        assert "not JSON" in info["last_error"] or "larger than" in info["last_error"], info
    alive(d)
    assert world.ws_pi.read_bytes() == before, "the credential file was changed"
    assert srv.count("g", outcome="canned") >= 1 and srv.count("g", outcome="ok") == 0
    d.stop()
    assert_no_secrets(world, info)
    clean_log(d)


# --- login ----------------------------------------------------------------------------------


def test_login_server_answering_hostile_bodies(home: Path) -> None:
    auth = home / ".tako" / "pi" / "agent" / "auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text(json.dumps(UNKNOWN))
    before = auth.read_bytes()
    with FakeLoginServer() as server:
        d = DaemonProcess(home, clean_env(home, **server.env())).start()
        try:
            for name, body in {**HOSTILE, "lifetime_overflows": ANSWERS["lifetime_overflows"][0]}.items():
                server.answer_with(Canned(body), path="/anthropic/v1/oauth/token")
                with d.client() as c:
                    login_id = _start(c, "anthropic")
                    [prompt] = _events(c, login_id, {"open_url"})
                    state = parse_qs(urlsplit(prompt["url"]).query)["state"][0]
                    c.call("login.answer", {"login_id": login_id, "text": f"code-{ANTHROPIC_CANARY}#{state}"})
                    *_, last = _events(c, login_id, {"done", "failed"})
                assert last["kind"] == "failed" and last["error"] in ("bad_token_response", "bad_response"), \
                    (name, last)
                assert ANTHROPIC_CANARY not in json.dumps(last)
                server.answer_with(None)
                alive(d)
                assert auth.read_bytes() == before
        finally:
            d.stop()
    clean_log(d, ANTHROPIC_CANARY)
