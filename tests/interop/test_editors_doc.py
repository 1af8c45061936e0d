"""The Neovim setup in docs/editors.md, extracted verbatim and run in a stock
``nvim --headless --clean`` against a real daemon whose Ollama is a loopback
fake. The test drives nvim through its own ``--listen`` socket (pynvim), like a
user typing: the statusline shows the selected provider and follows a pushed
``status`` event (the TakodEvent autocmd), and ``Takod.ask`` streams an answer
while nvim keeps answering requests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from tests.fakes.ollama_server import FakeOllama
from tests.harness import DaemonProcess, clean_env, wait_for

pytestmark = pytest.mark.interop

DOC = Path(__file__).resolve().parents[2] / "docs" / "editors.md"
REPLY = "Streaming from the fake model, one word after another, while you type."
GUARD = 60


def doc_snippet() -> str:
    blocks = re.findall(r"^```lua\n(.*?)^```$", DOC.read_text(), re.S | re.M)
    assert len(blocks) == 1, "docs/editors.md should have exactly one lua block"
    return blocks[0]


@pytest.fixture
def nvim_bin() -> str:
    path = shutil.which("nvim")
    if path is None:
        pytest.skip("nvim not found on PATH; install Debian's neovim")
    return path


@pytest.fixture
def pynvim() -> Any:
    return pytest.importorskip("pynvim")


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(reply=REPLY, chunk_delay=1.0, mode="refuse") as server:
        yield server


def attach(pynvim: Any, listen: Path, proc: subprocess.Popen[bytes]) -> Any:
    """pynvim on nvim's --listen socket, once nvim accepts there (the file appears before listen())."""
    def connected() -> Any:
        assert proc.poll() is None, "nvim exited"
        try:
            return pynvim.attach("socket", path=str(listen))
        except OSError:
            return None

    return wait_for(connected, timeout=GUARD)


def statusline(nvim: Any) -> str:
    return nvim.api.eval_statusline(nvim.options["statusline"], {"fillchar": " "})["str"]


@contextmanager
def documented_nvim(nvim_bin: str, pynvim: Any, socket: Path, ws: Path, tmp_path: Path) -> Iterator[Any]:
    """A stock headless nvim in ``ws`` running the doc's Lua against the daemon at
    ``socket``, attached once the plugin has its channel; quit (or killed) afterwards."""
    script = tmp_path / "takod.lua"
    script.write_text(doc_snippet())
    listen = tmp_path / "nvim.sock"
    nvim_home = tmp_path / "nh"
    nvim_home.mkdir()
    env = clean_env(nvim_home, TAKOD_SOCKET=str(socket))
    with (tmp_path / "nvim.log").open("wb") as log:
        proc = subprocess.Popen(
            [nvim_bin, "--headless", "--clean", "-n", "-i", "NONE", "--listen", str(listen), "-c", f"luafile {script}"],
            env=env, cwd=ws, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        nvim = None
        try:
            nvim = attach(pynvim, listen, proc)
            wait_for(lambda: nvim.exec_lua("return Takod ~= nil and Takod.ch ~= nil"), timeout=GUARD)
            yield nvim
        finally:
            if nvim is not None:
                try:
                    nvim.command("qa!")
                except Exception:  # nvim hangs up while answering qa!
                    pass
            try:
                proc.wait(GUARD)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_documented_neovim_setup(nvim_bin: str, pynvim: Any, ollama: FakeOllama, home: Path, tmp_path: Path) -> None:
    ws = home / "ws"
    ws.mkdir()
    (ws / "tako.toml").write_text("")
    daemon = DaemonProcess(home, clean_env(home, TAKO_WORKSPACE=str(ws), OLLAMA_HOST=ollama.host, PATH="/usr/bin:/bin"))
    daemon.start()
    try:
        with documented_nvim(nvim_bin, pynvim, daemon.socket, ws, tmp_path) as nvim:
            # Connected; Ollama refuses, so nothing is selected.
            assert "takod: none" in statusline(nvim)

            # Ollama comes up and takod re-probes: the status event reaches nvim as a
            # TakodEvent autocmd, which redraws the statusline.
            ollama.set_mode("slow-stream")
            with daemon.client() as c:
                assert c.call("providers.probe", timeout=60)["selected"] == "ollama"
            wait_for(lambda: "takod: ollama" in statusline(nvim), timeout=GUARD)
            event = nvim.exec_lua("return Takod.last_event")
            assert event["topic"] == "status" and event["payload"]["selected"] == "ollama"

            # An async prompt: the request returns at once with the stream id ...
            stream_id = nvim.exec_lua("return (Takod.ask(...))", "Say something")
            assert isinstance(stream_id, int)
            state = "local s = Takod.streams[...] return {done = s.done, n = #s.text}"
            wait_for(lambda: nvim.exec_lua(state, stream_id)["n"] >= 1, timeout=GUARD)
            # ... and while tokens are still coming (one a second), nvim answers.
            mode = nvim.api.get_mode()
            during = nvim.exec_lua(state, stream_id)
            assert mode["blocking"] is False and during["done"] is False
            ollama.chunk_delay = 0  # let the rest through

            wait_for(lambda: nvim.exec_lua(state, stream_id)["done"], timeout=GUARD)
            done = nvim.exec_lua("local s = Takod.streams[...] return {text = table.concat(s.text), "
                                 "result = s.result, error = s.error, "
                                 "lines = vim.api.nvim_buf_get_lines(s.buf, 0, -1, false)}", stream_id)
            assert done.get("error") is None
            assert done["text"] == REPLY and done["result"]["provider"] == "ollama"
            assert done["lines"][0] == "> Say something" and done["lines"][1] == REPLY
            assert done["lines"][2].startswith("[ollama, ")
    finally:
        daemon.stop()
    records = [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]
    assert not [r for r in records if "protocol violation" in str(r.get("event"))]
    assert not [r for r in records if r.get("event") == "editor reported an error"]


def test_documented_setup_notices_a_stopped_daemon_and_reconnects(nvim_bin: str, pynvim: Any, home: Path,
                                                                   tmp_path: Path) -> None:
    """`takod stop` while Neovim is busy: the statusline says `down` (not the stale provider),
    and once a daemon listens again the plugin reconnects by itself and `Takod.ask` works."""
    ws = home / "ws"
    ws.mkdir()
    (ws / "tako.toml").write_text("")
    denv = clean_env(home, TAKO_WORKSPACE=str(ws), PATH="/usr/bin:/bin")
    daemon = DaemonProcess(home, denv).start()
    try:
        with documented_nvim(nvim_bin, pynvim, daemon.socket, ws, tmp_path) as nvim:
            assert "takod: none" in statusline(nvim)
            old_channel = nvim.exec_lua("return Takod.ch")

            # Neovim is busy (its main loop blocked) while the daemon stops and its socket goes away.
            nvim.exec_lua("vim.loop.sleep(1500)", async_=True)
            stop = subprocess.run([shutil.which("takod") or "takod", "stop"], env=dict(denv, TAKOD_NO_SPAWN="1"),
                                  capture_output=True, text=True, timeout=GUARD)
            assert stop.returncode == 0, stop.stderr
            daemon.wait(GUARD)
            wait_for(lambda: "takod: down" in statusline(nvim), timeout=GUARD)

            # A daemon listens again: the plugin reconnects on its own, and prompts work.
            daemon = DaemonProcess(home, denv).start()
            wait_for(lambda: "takod: none" in statusline(nvim), timeout=GUARD)
            assert nvim.exec_lua("return Takod.ch") != old_channel
            err = nvim.exec_lua("local ok, e = pcall(Takod.ask, 'hi', {provider = 'ollama'}) return ok and '' or tostring(e)")
            assert "Invalid channel" not in err and err == "", err
    finally:
        daemon.stop()
