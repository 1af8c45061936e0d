"""`takod completion bash|zsh|fish` and `takod man`, generated from the CLI's parser.
The bash script is driven by a real bash exactly as bash's completion machinery drives
it: `complete -p` names the function, COMP_WORDS/COMP_CWORD hold the line, COMPREPLY the answer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from takod.cli import build_parser
from takod.cli_completion import nodes, walk
from tests.harness import clean_env

TAKOD = shutil.which("takod")
BASH = shutil.which("bash")


def takod(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert TAKOD, "the takod console script is not on PATH"
    return subprocess.run([TAKOD, *args], env=dict(clean_env(home), TAKOD_NO_SPAWN="1"), cwd=home,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def script(home: Path) -> Path:
    result = takod(home, "completion", "bash")
    assert result.returncode == 0, result.stderr
    path = home / "takod.bash"
    path.write_text(result.stdout)
    return path


def complete(script: Path, line: str) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end) through the generated function."""
    assert BASH
    words = line.split(" ")
    driver = 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _takod; printf "%s\\n" "${COMPREPLY[@]}"'
    result = subprocess.run([BASH, "--norc", "--noprofile", "-c", driver, "_", str(script), *words],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_registers_the_function(script: Path) -> None:
    assert BASH
    result = subprocess.run([BASH, "--norc", "--noprofile", "-c", 'source "$1"; complete -p takod', "_", str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "complete -F _takod takod"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("takod ", {"status", "auth", "key", "run", "watch", "completion", "version", "doctor", "service"}),
        ("takod ke", {"key"}),
        ("takod key ", {"set", "clear", "list", "names", "migrate"}),
        ("takod key set --j", {"--json"}),
        ("takod status --", {"--json", "--socket", "--short", "--help"}),
        ("takod prefer o", {"ollama"}),
        ("takod watch --topic ", {"status", "auth", "daemon", "login"}),
        ("takod serve --log-level w", {"warning"}),
        ("takod --version", {"--version"}),
        ("takod completion ", {"bash", "zsh", "fish"}),
        ("takod status --socket /nonexistent-dir-for-completion/x st", set()),  # past the value: nothing starts "st"
        ("takod run --socket /tmp/s --prov", {"--provider"}),  # an option's value is skipped on the way
        ("takod service status --manager ", {"auto", "systemd", "launchd"}),
    ],
)
def test_bash_completes_from_the_parser(script: Path, line: str, expected: set[str]) -> None:
    offered = set(complete(script, line))
    if expected:
        assert expected <= offered, offered
        prefix = line.rsplit(" ", 1)[1]
        assert all(word.startswith(prefix) for word in offered)
    else:
        assert offered == set()


def test_every_command_completes_its_own_options(script: Path) -> None:
    root = walk(build_parser())
    for node in nodes(root)[1:]:
        offered = set(complete(script, "takod " + " ".join(node.path) + " --"))
        assert {"--json", "--help"} <= offered, node.path
        assert {"--json", "--help"} <= set(complete(script, "takod " + " ".join(node.path) + " -")), node.path
    assert set(complete(script, "takod ")) >= set(root.commands)


def test_zsh_and_fish_scripts(home: Path) -> None:
    zsh = takod(home, "completion", "zsh").stdout
    assert zsh.startswith("# zsh completion") and "bashcompinit" in zsh and "complete -F _takod takod" in zsh
    fish = takod(home, "completion", "fish").stdout
    assert "complete -c takod -n '__fish_use_subcommand' -a status" in fish
    assert "__fish_seen_subcommand_from key" in fish and "-a names" in fish
    assert "-l topic -xa 'status auth daemon login'" in fish
    if shutil.which("fish"):
        assert subprocess.run(["fish", "--no-execute", "-c", fish], capture_output=True).returncode == 0


def test_man_page_lists_every_command(home: Path) -> None:
    result = takod(home, "man")
    assert result.returncode == 0
    page = result.stdout
    assert page.startswith(".TH TAKOD 1")
    for node in nodes(walk(build_parser()))[1:]:
        assert f".B takod {' '.join(node.path)}\n" in page
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", "-"], input=page, capture_output=True, text=True, timeout=60,
                               env={"PATH": "/usr/bin:/bin", "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""})
        assert shown.returncode == 0 and "takod key set" in shown.stdout


def test_completion_never_starts_a_daemon(home: Path) -> None:
    env = clean_env(home)  # spawning allowed
    subprocess.run([TAKOD, "completion", "bash"], env=env, cwd=home, capture_output=True, timeout=60, check=True)
    assert not Path(env["TAKOD_SOCKET"]).exists()
