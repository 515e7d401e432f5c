"""The documentation covers what exists, and nothing that does not (STYLE habit 11, after
sqlite-utils' tests/test_docs.py): every command and option of the command-line parser is in
docs/cli.md, under its own command's heading, and every error code is in the docs."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstate.cli import build_parser
from runstate.errors import ERRORS

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
COMMON = {"--db", "--url", "--token", "--json"}
HEADING = re.compile(r"^#{1,6} +(.*)$", re.MULTILINE)


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


COMMANDS = {" ".join(path): parser for path, parser in walk(build_parser()) if path}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


def positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [
        str(action.metavar)
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    ]


def sections() -> dict[str, str]:
    """Heading text -> the text up to the next heading."""
    text = CLI_DOC.read_text(encoding="utf-8")
    found = list(HEADING.finditer(text))
    out = {}
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        out[match.group(1).strip()] = text[match.end() : end]
    return out


def command_sections() -> dict[str, str]:
    return {
        title[len("runstate ") :]: body
        for title, body in sections().items()
        if title.startswith("runstate ")
    }


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_section_in_the_cli_docs(command):
    assert command in command_sections(), f"docs/cli.md has no heading '## runstate {command}'"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_and_argument_is_documented_in_its_commands_section(command):
    body = command_sections().get(command, "")
    for option in sorted(options(COMMANDS[command]) - COMMON):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", body), (
            f"{option} of 'runstate {command}' is not documented in its section of docs/cli.md"
        )
    for metavar in positionals(COMMANDS[command]):
        assert metavar in body, f"{metavar} of 'runstate {command}' is not in its section"


def test_common_options_are_documented_once_and_accepted_by_every_command():
    body = sections()["Common options"]
    for option in sorted(COMMON):
        assert f"`{option}" in body
    for command, parser in COMMANDS.items():
        assert COMMON <= options(parser), f"'runstate {command}' lacks a common option"


def test_the_docs_name_no_command_that_does_not_exist():
    assert set(command_sections()) <= set(COMMANDS)


def test_the_docs_name_no_option_a_command_does_not_have():
    for command, body in command_sections().items():
        mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", body))
        known = options(COMMANDS[command]) | COMMON
        assert mentioned <= known, f"docs of 'runstate {command}' mention {mentioned - known}"


def _docs_text() -> str:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(f.read_text(encoding="utf-8") for f in files if f.exists())


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_error_code_is_documented(code):
    assert f"`{code}`" in _docs_text(), f"the error code {code} is not in README.md or docs/"
