"""Detection against the real pi, codex, claude and gemini installed from npm by
scripts/install-test-tools.sh into .tools/npm, with a real Node; small shell
scripts stand in only where a real CLI cannot show the case (a hang, an old
Node, a native install with no package.json)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from takod_daemon.providers.detect import (
    CLI_NAMES,
    BinaryInfo,
    detect_all,
    detect_cli,
    detect_pi,
    read_manifest,
    workspace_pi_path,
)

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-test-tools.sh"
TOOLS_BIN = REPO / ".tools" / "npm" / "node_modules" / ".bin"
PACKAGES = {
    "pi": "@mariozechner/pi-coding-agent",
    "codex": "@openai/codex",
    "claude": "@anthropic-ai/claude-code",
    "gemini": "@google/gemini-cli",
}
# Each wait is bounded by this; pi and gemini need a second or two to start.
GUARD = 120

SLEEP = shutil.which("sleep")  # looked up now: the tests run with an empty PATH
T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        with anyio.fail_after(GUARD):
            return await fn()

    return anyio.run(bounded)


def pinned_versions() -> dict[str, str]:
    """The versions the install script pins, by CLI name (one source of truth)."""
    pins = dict(re.findall(r'"(@[\w.-]+/[\w.-]+)@([\w.-]+)"', INSTALL_SCRIPT.read_text()))
    return {name: pins[package] for name, package in PACKAGES.items()}


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --version still writes state (gemini: ~/.gemini/projects.json); keep it out of the real home.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("CODEX_HOME", "CLAUDE_CONFIG_DIR", "GEMINI_CLI_HOME", "PI_CODING_AGENT_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # nothing may depend on the caller's PATH
    (tmp_path / "home").mkdir()


@pytest.fixture(scope="module")
def tools_bin() -> Path:
    if not all((TOOLS_BIN / name).exists() for name in CLI_NAMES):
        message = f"real CLIs are not installed in {TOOLS_BIN}; run scripts/install-test-tools.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TOOLS_BIN


@pytest.fixture(scope="module")
def real_node() -> str:
    node = shutil.which("node")
    assert node, "Node.js must be installed for the real CLIs"
    return os.path.realpath(node)


@pytest.fixture(scope="module")
def real_node_version(real_node: str) -> str:
    done = subprocess.run([real_node, "--version"], capture_output=True, text=True, check=True, timeout=GUARD)
    return done.stdout.strip().removeprefix("v")


@pytest.fixture
def node_dir(tmp_path: Path, real_node: str) -> Path:
    """A PATH entry holding only ``node``, so nothing else from /usr/bin leaks in."""
    directory = tmp_path / "node-bin"
    directory.mkdir()
    (directory / "node").symlink_to(real_node)
    return directory


def test_installed_versions_are_the_pinned_ones(tools_bin: Path) -> None:
    for name, version in pinned_versions().items():
        manifest = read_manifest(tools_bin / name)
        assert manifest is not None, name
        assert (manifest.name, manifest.version) == (PACKAGES[name], version)


def test_package_json_version_equals_version_output(tools_bin: Path, node_dir: Path) -> None:
    path = f"{tools_bin}{os.pathsep}{node_dir}"
    from_manifest = run(lambda: detect_all(workspace=None, path=path, mode="manifest"))
    from_running = run(lambda: detect_all(workspace=None, path=path, mode="run"))
    pins = pinned_versions()
    for name in CLI_NAMES:
        quick, ran = from_manifest[name], from_running[name]
        assert quick.path == ran.path == str(tools_bin / name)
        assert quick.source == ran.source == "path"
        assert (quick.problem, ran.problem) == (None, None), (quick.detail, ran.detail)
        assert quick.version == ran.version == pins[name]


def test_pi_node_is_checked_against_pis_own_engines(
    tools_bin: Path, node_dir: Path, real_node_version: str
) -> None:
    manifest = read_manifest(tools_bin / "pi")
    assert manifest is not None and manifest.engines["node"] == ">=20.6.0"  # pi 0.73.1: not 22
    info = run(lambda: detect_pi(workspace=None, path=f"{tools_bin}{os.pathsep}{node_dir}"))
    assert info.node_path == str(node_dir / "node")
    assert info.node_version == real_node_version
    assert info.node_ok is True and info.problem is None


def test_node_older_than_pis_engines_is_incompatible(tools_bin: Path, tmp_path: Path) -> None:
    old = write_script(tmp_path / "old-node" / "node", "echo v20.5.1\n")
    info = run(lambda: detect_pi(workspace=None, path=f"{tools_bin}{os.pathsep}{old.parent}", mode="run"))
    assert (info.node_path, info.node_version, info.node_ok) == (str(old), "20.5.1", False)
    assert info.problem == "node-incompatible"
    assert ">=20.6.0" in (info.detail or "")
    assert info.version == pinned_versions()["pi"]  # still known, from package.json


def test_pi_without_any_node_is_node_missing(tools_bin: Path) -> None:
    info = run(lambda: detect_pi(workspace=None, path=str(tools_bin)))
    assert info.path == str(tools_bin / "pi")
    assert (info.node_path, info.node_ok, info.problem) == (None, False, "node-missing")


def test_workspace_pi_and_node_come_before_path(
    tools_bin: Path, node_dir: Path, tmp_path: Path, real_node: str, real_node_version: str
) -> None:
    workspace = tmp_path / "ws"
    ws_pi = workspace_pi_path(workspace)
    ws_pi.parent.mkdir(parents=True)
    ws_pi.symlink_to(os.path.realpath(tools_bin / "pi"))  # as npm links node_modules/.bin/pi
    versions = workspace / ".tako" / "nvm" / "versions" / "node"
    newest = versions / f"v{real_node_version}" / "bin" / "node"
    newest.parent.mkdir(parents=True)
    newest.symlink_to(real_node)
    write_script(versions / "v18.0.0" / "bin" / "node", "echo v18.0.0\n")

    info = run(lambda: detect_pi(workspace=workspace, path=f"{tools_bin}{os.pathsep}{node_dir}", mode="run"))
    assert (info.path, info.source) == (str(ws_pi), "workspace")
    assert (info.node_path, info.node_version, info.node_ok) == (str(newest), real_node_version, True)
    # --version ran with the workspace Node first on PATH: it works with no node on the given PATH too.
    alone = run(lambda: detect_pi(workspace=workspace, path="", mode="run"))
    assert (alone.problem, alone.version) == (None, pinned_versions()["pi"])


def test_codex_without_its_platform_binary_fails_only_when_run(
    tools_bin: Path, node_dir: Path, tmp_path: Path
) -> None:
    # The real launcher and package.json, without the optional dependency holding the binary.
    real = Path(os.path.realpath(tools_bin / "codex")).parents[1]
    package = tmp_path / "lib" / "node_modules" / "@openai" / "codex"
    (package / "bin").mkdir(parents=True)
    shutil.copy2(real / "package.json", package / "package.json")
    shutil.copy2(real / "bin" / "codex.js", package / "bin" / "codex.js")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "codex").symlink_to(package / "bin" / "codex.js")
    path = f"{bin_dir}{os.pathsep}{node_dir}"

    quick = run(lambda: detect_cli("codex", path=path, mode="auto"))
    assert (quick.version, quick.problem) == (pinned_versions()["codex"], None)
    ran = run(lambda: detect_cli("codex", path=path, mode="run"))
    assert (ran.version, ran.problem) == (pinned_versions()["codex"], "version-failed")
    assert "Missing optional dependency" in (ran.detail or "")


def test_cli_outside_any_npm_package_is_run_only_when_allowed(tmp_path: Path) -> None:
    # Like Claude's native installer: no package.json of its own, and an unrelated
    # one further up that must not be taken for it.
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text('{"name": "unrelated", "version": "9.9.9", "bin": {"x": "x.js"}}')
    native = write_script(project / "bin" / "claude", "echo '2.1.300 (Claude Code)'\n")
    quick = run(lambda: detect_cli("claude", path=str(native.parent), mode="manifest"))
    assert (quick.path, quick.version, quick.problem) == (str(native), None, None)
    auto = run(lambda: detect_cli("claude", path=str(native.parent), mode="auto"))
    assert (auto.version, auto.problem) == ("2.1.300", None)


def test_empty_path_finds_nothing(tmp_path: Path) -> None:
    found = run(lambda: detect_all(workspace=tmp_path, path="", mode="run"))
    assert {name: info.problem for name, info in found.items()} == dict.fromkeys(CLI_NAMES, "not-installed")
    assert all(info.path is None and info.version is None for info in found.values())


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to watch the child")
def test_version_timeout_kills_the_cli_and_its_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("CHILD_PID_FILE", str(pid_file))
    hanging = write_script(tmp_path / "bin" / "claude", f'{SLEEP} 300 &\necho $! > "$CHILD_PID_FILE"\nwait\n')

    info: BinaryInfo = run(lambda: detect_cli("claude", path=str(hanging.parent), mode="run", timeout=0.5))
    assert (info.path, info.version, info.problem) == (str(hanging), None, "version-failed")
    assert "timed out after 0.5s" in (info.detail or "")
    child = int(pid_file.read_text())

    async def until_gone() -> None:
        while not _gone(child):
            await anyio.sleep(0.05)

    try:
        run(until_gone)  # bounded by GUARD; fails the test if the grandchild survives
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
