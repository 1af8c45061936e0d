"""The Inference skill's flags on run/chat/embed/models, each with help text."""

from __future__ import annotations

import argparse

import pytest

from takod.cli import build_parser


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("command", ["run", "chat", "embed", "models"])
def test_every_option_has_help(command: str) -> None:
    for action in subparser(command)._actions:
        assert action.help and action.help != argparse.SUPPRESS, (command, action.option_strings or action.dest)


def test_skill_aliases_parse_to_the_same_options() -> None:
    args = build_parser("run").parse_args(
        ["run", "--backend", "ollama", "-m", "llama3.2", "-s", "sys", "-t", "0.5", "--prompt", "hi"])
    assert (args.provider, args.model_opt, args.system, args.temperature, args.prompt_opt) == (
        "ollama", "llama3.2", "sys", 0.5, "hi")
    chat = build_parser("chat").parse_args(["chat", "--backend", "anthropic", "-m", "claude-x", "-s", "s", "-t", "1"])
    assert (chat.provider, chat.model, chat.system, chat.temperature) == ("anthropic", "claude-x", "s", 1.0)
    models = build_parser("models").parse_args(["models", "--backend", "ollama", "--format", "json"])
    assert (models.provider, models.format) == ("ollama", "json")
    embed = build_parser("embed").parse_args(["embed", "--backend", "openai", "-m", "m", "--output", "length"])
    assert (embed.provider, embed.model, embed.output) == ("openai", "m", "length")
