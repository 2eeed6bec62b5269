"""Every `fuseval` command, option and argument explains itself in `--help` (no models, a second or two)."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from harness.cli import app

ROOT = typer.main.get_command(app)


def _commands(group, prefix: tuple[str, ...] = ()):
    """(path, command) for every command under `group`, nested groups included."""
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)


COMMANDS = list(_commands(ROOT))
IDS = [" ".join(path) for path, _ in COMMANDS]


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "240", "TERM": "dumb"})
    assert result.exit_code == 0, f"fuseval {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.output


def test_the_app_has_help_and_its_options_too():
    assert (ROOT.help or "").strip(), "the `fuseval` app has no help text"
    for p in ROOT.params:
        assert (getattr(p, "help", None) or "").strip(), f"`fuseval` option {p.opts} has no help"


def test_there_are_commands():
    names = {path[0] for path, _ in COMMANDS}
    # the commands DESIGN.md section 5 names, at least
    assert {"merge", "fuse", "run", "report", "gate", "demo"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_every_command_has_help(path, cmd):
    text = (cmd.help or cmd.short_help or "").strip()
    assert text, f"`fuseval {' '.join(path)}` has no docstring or help"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_every_option_and_argument_has_help(path, cmd):
    missing = [p.name for p in cmd.params if not getattr(p, "hidden", False)
               and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"`fuseval {' '.join(path)}`: no help for {', '.join(missing)}"


def test_top_level_help_lists_every_command():
    out = _help(["--help"])
    for name, cmd in ROOT.commands.items():
        if not getattr(cmd, "hidden", False):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), f"`fuseval --help` does not list {name}"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_command_help_renders_and_names_every_option(path, cmd):
    out = _help([*path, "--help"])
    for p in cmd.params:
        if getattr(p, "hidden", False) or p.param_type_name != "option":
            continue
        assert any(o in out for o in p.opts), f"`fuseval {' '.join(path)} --help` does not show {p.opts[0]}"
