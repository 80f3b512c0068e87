"""The command line's own contract: every option is explained in ``--help``."""

from __future__ import annotations

import argparse

from sora.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: str = "sora"):
    """Every (name, parser) pair of leaf subcommands, e.g. ``("sora data synth", p)``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _commands(child, f"{prefix} {name}")


def test_every_option_has_a_help_line_with_its_default():
    commands = dict(_commands(build_parser()))
    assert {"sora train", "sora eval", "sora predict", "sora data synth", "sora demo"} <= set(
        commands
    )
    missing, no_default = [], []
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
            if not action.help:
                missing.append(label)
            elif (
                action.option_strings
                and action.default not in (None, False)
                and "default" not in action.help
            ):
                no_default.append(label)
    assert not missing, f"options without a help line: {missing}"
    assert not no_default, f"options whose help does not give the default: {no_default}"
