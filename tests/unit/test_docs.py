"""docs/cli.md and `--help` cover every `mvc` command and option."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mvcstore.cli.main import EXIT_ERROR, EXIT_OK, EXIT_USAGE, cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COMMANDS = sorted(cli.commands)


def _sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    sections = {}
    for part in parts[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = body
    return sections


def _options(command: click.Command) -> list[click.Option]:
    return [
        param
        for param in command.params
        if isinstance(param, click.Option) and "--help" not in param.opts
    ]


def _documented(section: str, flag: str) -> bool:
    return re.search("`" + re.escape(flag) + r"[` ]", section) is not None


def test_cli_exposes_the_documented_command_set():
    expected = {"init", "commit", "log", "show", "checkout", "branch", "tag"}
    expected |= {"metrics", "fsck", "upgrade", "reflog", "diff", "import"}
    expected |= {"compare", "best", "plot", "ui"}
    expected |= {"stats"}
    expected |= {"gc", "retain"}
    expected |= {"remote", "push", "pull", "clone"}
    assert expected == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_and_option_has_help_text(name):
    command = cli.commands[name]

    result = CliRunner().invoke(cli, [name, "--help"])

    assert result.exit_code == 0, result.output
    assert command.help and command.help.strip()
    first_line = command.help.strip().splitlines()[0]
    assert first_line in result.output
    for option in _options(command):
        assert option.help and option.help.strip(), f"{name} {option.opts}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_docs_section_naming_its_options_and_arguments(name):
    sections = _sections()
    command = cli.commands[name]

    section = sections.get(f"`mvc {name}`")

    assert section is not None, f"docs/cli.md has no section '## `mvc {name}`'"
    for option in _options(command):
        for flag in [*option.opts, *option.secondary_opts]:
            assert _documented(section, flag), f"`mvc {name}` docs lack {flag}"
    for argument in command.params:
        if isinstance(argument, click.Argument):
            assert argument.human_readable_name.strip("[]") in section


def test_docs_sections_name_only_real_commands():
    titles = [title for title in _sections() if title.startswith("`mvc ")]

    assert sorted(title[len("`mvc ") : -1] for title in titles) == COMMANDS


def test_docs_list_exit_codes_and_global_options():
    sections = _sections()
    codes = sections["Exit codes"]
    global_options = sections["Global options"]

    for code in (EXIT_OK, EXIT_ERROR, EXIT_USAGE):
        assert re.search(rf"^\| {code} \|", codes, flags=re.MULTILINE), code
    for option in _options(cli):
        for flag in option.opts:
            assert _documented(global_options, flag), flag
