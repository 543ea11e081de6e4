"""The README tells the truth: every environment variable, command and endpoint it names
exists, and every option's environment variable is documented (as Datasette's suite keeps
its documentation honest)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from service.cli import main
from tests.conftest import Server

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = README + "".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("docs/*.md")))
CODE = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", DOCS, re.S) + re.findall(r"`([^`\n]+)`", DOCS))
"""What the docs show as code (fenced blocks and inline spans): commands to type."""


def _commands(
    group: click.Command, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield prefix, group
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from _commands(command, (*prefix, name))


COMMANDS = dict(_commands(main))


def _option_envvars() -> set[str]:
    names: set[str] = set()
    for command in COMMANDS.values():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def _read_by_code() -> set[str]:
    """Variables the code reads directly (``os.environ``), outside any option."""
    found: set[str] = set()
    for folder in ("service", "watchers", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(re.findall(r"\"(AGNES_[A-Z0-9_]+)\"", path.read_text(encoding="utf-8")))
    return found


def test_every_environment_variable_the_docs_name_is_read() -> None:
    named = set(re.findall(r"\bAGNES_[A-Z0-9_]+\b", DOCS))
    unknown = named - _option_envvars() - _read_by_code()
    assert not unknown, f"the docs name variables nothing reads: {sorted(unknown)}"


def test_every_option_s_environment_variable_is_in_the_readme() -> None:
    missing = _option_envvars() - set(re.findall(r"\bAGNES_[A-Z0-9_]+\b", README))
    assert not missing, f"options whose variables the README does not name: {sorted(missing)}"


def test_every_option_s_environment_variable_is_in_its_help() -> None:
    runner = CliRunner()
    for words, command in COMMANDS.items():
        shown = runner.invoke(main, [*words, "--help"], terminal_width=200).output
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            for name in [envvar] if isinstance(envvar, str) else envvar or []:
                assert name in shown, f"`agnes-activity {' '.join(words)} --help` hides {name}"


def test_every_command_the_docs_name_exists() -> None:
    named = {
        tuple(words.split()) for words in re.findall(r"agnes-activity((?: [a-z][a-z-]*)+)", CODE)
    }
    assert named, "the docs name no command at all"
    for words in named:
        # the longest prefix that is a command; words after it are arguments
        known = max((n for n in range(len(words) + 1) if words[:n] in COMMANDS), default=0)
        assert known >= 1, f"`agnes-activity {' '.join(words)}` is no command"
        command = COMMANDS[words[:known]]
        assert not isinstance(command, click.Group) or known == len(words), (
            f"`agnes-activity {' '.join(words)}`: {words[known]!r} is not a subcommand"
        )


def test_every_endpoint_the_readme_names_is_served(server: Server) -> None:
    routes: set[tuple[str, str]] = set()
    for route in server.app.routes:
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        for method in getattr(route, "methods", None) or {"WS"}:
            routes.add((method, path))
    named = re.findall(r"`(GET|POST|PUT|DELETE|PATCH|WS) (/[^ `?]*)", README)
    assert len(named) >= 10, "the README's endpoint table was not found"
    missing = {(m, p) for m, p in named if (m, p) not in routes and "*" not in p}
    assert not missing, f"the README names endpoints the app does not serve: {sorted(missing)}"


def _layout_table() -> list[str]:
    """The files and folders the README's layout table names, as paths from the root: a
    bare name (``transcript.py``) is in the folder of the path named before it in its
    cell."""
    section = README.split("### Layout", 1)[1].split("\n## ", 1)[0]
    named: list[str] = []
    for row in re.findall(r"^\|.*\| (.*) \|$", section, re.M)[2:]:
        folder = ""
        for name in re.findall(r"`([^`]+)`", row):
            if "/" in name:
                named.append(name)
                folder = name if name.endswith("/") else name.rsplit("/", 1)[0] + "/"
            elif re.fullmatch(r"\w+\.(py|json)", name):
                named.append(folder + name)
    return named


def test_the_layout_table_names_files_that_exist_and_every_module() -> None:
    named = _layout_table()
    assert len(named) > 30, "the README's layout table was not found"
    missing = [name for name in named if not (ROOT / name).exists()]
    assert not missing, f"the layout table names what is not there: {missing}"
    folders = tuple(name for name in named if name.endswith("/"))
    unnamed = [
        path.relative_to(ROOT).as_posix()
        for top in ("service", "watchers")
        for path in sorted((ROOT / top).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and path.relative_to(ROOT).as_posix() not in named
        and not path.relative_to(ROOT).as_posix().startswith(folders)
    ]
    assert not unnamed, f"modules the layout table does not name: {unnamed}"


def test_the_package_list_names_every_package_so_an_install_has_them_all() -> None:
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for top in ("service", "watchers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert declared == found, f"pyproject.toml's packages lack {sorted(found - declared)}"
