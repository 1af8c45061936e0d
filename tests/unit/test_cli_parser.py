"""build_parser(only): the one command a run uses is built exactly as in the full parser."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from takod.cli import build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def shape(parser: argparse.ArgumentParser) -> list[object]:
    """Every argument's options, destination, choices and default, and the same for nested commands."""
    out: list[object] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            out.append({name: shape(p) for name, p in a.choices.items()})
        else:
            out.append((tuple(a.option_strings), a.dest, a.nargs, tuple(a.choices or ()), repr(a.default)))
    return out


def test_each_command_alone_is_built_as_in_the_full_parser() -> None:
    full = subcommands(build_parser())
    assert "status" in full and len(full) > 10
    for name, parser in full.items():
        alone = subcommands(build_parser(name))
        assert list(alone) == [name]
        assert shape(alone[name]) == shape(parser)
        assert alone[name].get_default("func") is parser.get_default("func")


def test_a_word_that_is_no_command_builds_them_all() -> None:
    assert subcommands(build_parser("bogus")).keys() == subcommands(build_parser()).keys()


def test_status_imports_no_other_command_module() -> None:
    # Start-up time of `takod status` (bench/cli_startup.py): the login, service and
    # doctor commands pull in subprocess, threading and more; only their own runs pay.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from takod.cli import build_parser\n"
        "build_parser('status')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('takod') or m in ('subprocess', 'threading'))))\n"
    )
    client = Path(__file__).resolve().parents[2] / "client"  # this checkout's, not whatever is installed
    env = {**os.environ, "PYTHONPATH": str(client)}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=env).stdout.split()
    assert "takod.cli" in loaded
    assert not {"takod.cli_login", "takod.cli_service", "takod.cli_doctor", "takod.cli_completion", "subprocess"} & set(loaded)


def test_the_prompt_fast_path_parses_as_the_parser_does() -> None:
    from takod.cli import prompt_args

    words = ["status", "--short"]
    assert vars(prompt_args(words)) == vars(build_parser("status").parse_args(words)) == vars(build_parser().parse_args(words))
    for other in (["status"], ["status", "--short", "--json"], ["--short", "status"], ["status", "--short", "x"]):
        assert prompt_args(other) is None  # everything else goes through argparse
