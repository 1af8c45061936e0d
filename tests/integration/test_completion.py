"""`takod completion bash|zsh|fish` and `takod man`, generated from the CLI's parser.
Each script is driven by its own shell's completion machinery: bash as bash's completion
drives it (`complete -p` names the function, COMP_WORDS/COMP_CWORD hold the line, COMPREPLY
the answer); zsh through compinit in an interactive `zsh -f` on a zpty, Tab pressed, every
match recorded as the completion system adds it; fish through `complete -C LINE`."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from takod.cli import build_parser
from takod.cli_completion import nodes, walk
from tests.harness import clean_env

TAKOD = shutil.which("takod")
BASH = shutil.which("bash")
ZSH = shutil.which("zsh")
FISH = shutil.which("fish")
SHELLS_DIR = Path(__file__).parent / "shells"


def takod(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert TAKOD, "the takod console script is not on PATH"
    return subprocess.run([TAKOD, *args], env=dict(clean_env(home), TAKOD_NO_SPAWN="1"), cwd=home,
                          capture_output=True, text=True, timeout=60)


def generated(home: Path, shell: str) -> Path:
    result = takod(home, "completion", shell)
    assert result.returncode == 0, result.stderr
    path = home / f"takod.{shell}"
    path.write_text(result.stdout)
    return path


@pytest.fixture
def script(home: Path) -> Path:
    return generated(home, "bash")


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


CASES = [
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
        ("takod settings set ", {"preferred_provider", "ollama_model", "ollama_host", "type1_model", "type2_model"}),
        ("takod run --model ", set()),  # a model name: no file names, no commands
]
# Only what the parser gives that level: `service status` has no `--short` (top-level `status` has),
# and a `--topic status` value is not the `status` command.
EXACT = [
    ("takod service status --", {"--help", "--json", "--socket", "--manager"}),
    ("takod watch --topic status --", {"--help", "--json", "--socket", "--topic"}),
    ("takod key set --", {"--help", "--json", "--socket"}),
]


def check(offered: set[str], line: str, expected: set[str]) -> None:
    if expected:
        assert expected <= offered, offered
        prefix = line.rsplit(" ", 1)[1]
        assert all(word.startswith(prefix) for word in offered), offered
    else:
        assert offered == set()


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_bash_completes_from_the_parser(script: Path, line: str, expected: set[str]) -> None:
    check(set(complete(script, line)), line, expected)


@pytest.mark.parametrize(("line", "expected"), EXACT)
def test_bash_offers_only_that_levels_options(script: Path, line: str, expected: set[str]) -> None:
    assert set(complete(script, line)) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [  # bash splits `--topic=st` at "=" (COMP_WORDBREAKS): the words are --topic, =, st
        ("takod watch --topic = st", {"status"}),
        ("takod watch --topic =", {"status", "auth", "daemon", "login"}),
        ("takod run --format = j", {"json"}),
        ("takod run --socket = /tmp/x --prov", {"--provider"}),
    ],
)
def test_bash_completes_an_option_value_after_equals(script: Path, line: str, expected: set[str]) -> None:
    assert set(complete(script, line)) == expected


def complete_zsh(script: Path, line: str) -> list[str]:
    """What zsh's completion system offers for ``line`` after ``source script``: an interactive
    ``zsh -f`` on a pseudo-terminal (zpty) with compinit, the line typed and Tab pressed."""
    assert ZSH
    out = script.with_suffix(".matches")
    out.write_text("")
    env = dict(clean_env(script.parent), TAKOD_COMPLETION_SCRIPT=str(script), TAKOD_COMPLETION_OUT=str(out))
    argv = [ZSH, "-f", str(SHELLS_DIR / "zsh_complete.zsh"), str(SHELLS_DIR / "zsh_capture.zsh"), line]
    result = subprocess.run(argv,
                            env=env, cwd=script.parent, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return out.read_text().splitlines()


def test_zsh_completes_a_directory_with_a_slash(home: Path) -> None:
    """A PATH value goes through directories: zsh ends a directory with "/", not a space."""
    if not ZSH:
        pytest.skip("zsh is not installed (scripts/test.sh installs it)")
    script = generated(home, "zsh")
    (home / "sock-dir").mkdir()
    line = f"takod status --socket {home}/sock-d"
    complete_zsh(script, line)
    assert script.with_suffix(".matches.line").read_text() == f"takod status --socket {home}/sock-dir/"
    complete_zsh(script, "takod sta")  # a command is still a word: a space after it
    assert script.with_suffix(".matches.line").read_text() == "takod status "
    complete_zsh(script, f"takod status --socket={home}/sock-d")
    assert script.with_suffix(".matches.line").read_text() == f"takod status --socket={home}/sock-dir/"


def test_zsh_without_compinit_says_what_to_do(home: Path) -> None:
    if not ZSH:
        pytest.skip("zsh is not installed (scripts/test.sh installs it)")
    script = generated(home, "zsh")
    result = subprocess.run([ZSH, "-f", "-c", 'source "$1"', "_", str(script)], env=clean_env(home), cwd=home,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "autoload -Uz compinit && compinit" in result.stderr, result.stderr
    assert "command not found" not in result.stderr


def complete_fish(script: Path, line: str) -> list[str]:
    """What fish offers for ``line`` after ``source script``: fish's own ``complete -C``."""
    assert FISH
    result = subprocess.run([FISH, "--no-config", "-c", "source $argv[1]; and complete -C $argv[2]", str(script), line],
                            env=clean_env(script.parent), cwd=script.parent, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [row.split("\t", 1)[0] for row in result.stdout.splitlines() if row]


SHELL_DRIVERS = {"zsh": (ZSH, complete_zsh), "fish": (FISH, complete_fish)}


@pytest.fixture(params=list(SHELL_DRIVERS))
def driver(request: pytest.FixtureRequest, home: Path) -> Callable[[str], set[str]]:
    binary, run = SHELL_DRIVERS[request.param]
    if not binary:
        pytest.skip(f"{request.param} is not installed (scripts/test.sh installs it)")
    path = generated(home, request.param)
    return lambda line: set(run(path, line))


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_zsh_and_fish_complete_from_the_parser(driver: Callable[[str], set[str]], line: str,
                                               expected: set[str]) -> None:
    offered = driver(line)
    if line == "takod " and "--help" not in offered:  # fish lists options only once a "-" is typed
        expected = expected - {"--help", "--version"}
    check(offered, line, expected)


@pytest.mark.parametrize(("line", "expected"), EXACT)
def test_zsh_and_fish_offer_only_that_levels_options(driver: Callable[[str], set[str]], line: str,
                                                    expected: set[str]) -> None:
    assert driver(line) == expected


def test_zsh_and_fish_complete_an_option_value_after_equals(driver: Callable[[str], set[str]], home: Path) -> None:
    """argparse takes `--topic=status` as `--topic status`: completion too."""
    assert {w.removeprefix("--topic=") for w in driver("takod watch --topic=st")} == {"status"}
    (home / "sock-file").write_text("")
    offered = driver(f"takod status --socket={home}/sock-")
    assert {w.rsplit("/", 1)[-1] for w in offered} == {"sock-file"}, offered


def test_a_positional_value_named_like_a_command_is_not_that_command(
        script: Path, driver: Callable[[str], set[str]]) -> None:
    """`takod prefer ollama`: "ollama" is prefer's argument there, not the `ollama` command."""
    for offered in (set(complete(script, "takod prefer ollama ")), driver("takod prefer ollama ")):
        assert not offered & {"host", "model"}, offered
    assert {"host", "model"} <= driver("takod ollama ")


def test_zsh_and_fish_complete_every_command(driver: Callable[[str], set[str]]) -> None:
    root = walk(build_parser())
    assert driver("takod ") >= set(root.commands)
    for node in nodes(root)[1:]:
        words = "takod " + " ".join(node.path) + " "
        assert {"--json", "--help"} <= driver(words + "--"), node.path
        if node.commands:
            assert set(node.commands) <= driver(words), node.path


def test_zsh_and_fish_complete_file_names_for_a_path(driver: Callable[[str], set[str]], home: Path) -> None:
    (home / "sock-dir").mkdir()
    (home / "sock-file").write_text("")
    offered = driver(f"takod status --socket {home}/sock-")
    # zsh records names without the directory typed before them, fish whole paths, a directory with "/"
    assert {w.rstrip("/").rsplit("/", 1)[-1] for w in offered} == {"sock-dir", "sock-file"}, offered


def test_every_command_completes_its_own_options(script: Path) -> None:
    root = walk(build_parser())
    for node in nodes(root)[1:]:
        offered = set(complete(script, "takod " + " ".join(node.path) + " --"))
        assert {"--json", "--help"} <= offered, node.path
        assert {"--json", "--help"} <= set(complete(script, "takod " + " ".join(node.path) + " -")), node.path
    assert set(complete(script, "takod ")) >= set(root.commands)


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


def test_bash_ends_a_directory_with_a_slash_not_a_space(script: Path, home: Path) -> None:
    """Tab in a real interactive bash on a pty: readline, not just COMPREPLY, decides what follows a
    completed directory (the function must ask for `-o filenames`)."""
    assert BASH
    (home / "sock-dir").mkdir()
    rc = home / "bashrc"
    rc.write_text(f'source "{script}"\ntakod() {{ printf "<%s>" "$@"; echo; }}\nPS1="$ "\nbind "set bell-style none"\n')
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive bash with only the generated script
        os.execve(BASH, [BASH, "--noprofile", "--rcfile", str(rc), "-i"], {"HOME": str(home), "TERM": "dumb"})
    try:
        os.write(fd, f"takod status --socket {home}/sock-d\tX\n".encode())
        seen = b""
        deadline = time.monotonic() + 60
        while b"X>" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                seen += os.read(fd, 4096)
        assert f"<{home}/sock-dir/X>".encode() in seen, seen.decode(errors="replace")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def test_zsh_describes_each_command_and_option_by_its_level(home: Path) -> None:
    """zsh's menu shows each command and option with its help, as `gh` and fish do: the help of the
    level offered (`service status` is not the top-level `status`)."""
    if not ZSH:
        pytest.skip("zsh is not installed (scripts/test.sh installs it)")
    script = generated(home, "zsh")
    root = walk(build_parser())

    def shown(line: str) -> str:
        path = script.with_suffix(".matches.shown")
        path.write_text("")
        complete_zsh(script, line)
        return path.read_text()

    top = shown("takod ")
    assert all(name in top for name in root.commands)
    assert "show the daemon and every provider's readiness" in top
    service = shown("takod service ")
    assert root.commands["service"].commands["status"].help[:40] in service
    assert root.commands["status"].help not in service
    assert "--json  -- machine-readable output (stable keys)" in shown("takod key set --j")
