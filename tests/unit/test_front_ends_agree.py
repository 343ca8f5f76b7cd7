"""`gpuhost` (typer) and `gpuhost-agent` (argparse) are built from one table per command (gpuhost.options).

Read from the built front ends themselves, so a command or an option added to either is covered at once:
- every CLI command and every agent subcommand comes from a table, and a table names its command on each
  front end it has;
- each front end offers exactly the table's rows it has (names, short names, defaults, repeat, required)
  and shows each in --help; an option both have has one default, the table's, which is also the default
  of the feature's X.parse it feeds;
- every value a row's kind refuses (not a number, NaN, infinities, overflow, below or above the bounds,
  white space around it, a NUL, `..` in a place, an unknown choice) is refused by both front ends before
  the command runs: exit 2 and the same JSON error.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gpuhost.agent import build_parser
from gpuhost.agent import main as agent_main
from gpuhost.agent.common import AgentCommand, add_command
from gpuhost.cli import COMMANDS, app
from gpuhost.cli.table import typer_command
from gpuhost.model import UsageError, failure_of
from gpuhost.options import AGENT, BOTH, CLI, Command, Option, Values, json_flag

NO_DOCKER = "unix:///nonexistent/gpuhost-test/docker.sock"


# --- the front ends as built ------------------------------------------------------------------------------


def cli_commands() -> dict[str, Any]:
    """Every CLI command ("storage plan" for a group's), as typer built it."""
    group = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name in COMMANDS:
        command = group.get_command(None, name)
        for sub_name, sub in (getattr(command, "commands", None) or {name: command}).items():
            found[name if sub is command else f"{name} {sub_name}"] = sub
    return found


def agent_subparsers() -> tuple[dict[str, Any], dict[str, AgentCommand]]:
    parser, handlers = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return dict(sub.choices), handlers


def table_of(command: Any) -> Command:
    table = getattr(command.callback, "gpuhost_table", None)
    assert isinstance(table, Command), f"{command.name}: not built from a gpuhost.options table"
    return table


def all_tables() -> list[Command]:
    tables: dict[int, Command] = {}
    for command in cli_commands().values():
        table = table_of(command)
        tables[id(table)] = table
    for handler in agent_subparsers()[1].values():
        tables[id(handler.table)] = handler.table
    return sorted(tables.values(), key=lambda t: t.cli or t.agent)


TABLES = all_tables()


def test_every_command_of_both_front_ends_comes_from_a_table_that_names_it() -> None:
    commands = cli_commands()
    subparsers, handlers = agent_subparsers()
    assert set(subparsers) == set(handlers)
    for name, command in commands.items():
        assert table_of(command).cli == name
    for name, handler in handlers.items():
        assert isinstance(handler, AgentCommand) and handler.table.agent == name
    for table in TABLES:
        assert (table.cli in commands) == bool(table.cli), table.cli
        assert (table.agent in handlers) == bool(table.agent), table.agent
        if table.cli and table.agent:
            assert table_of(commands[table.cli]) is handlers[table.agent].table


def test_the_commands_on_both_front_ends_are_the_ones_the_cli_and_the_agent_share() -> None:
    shared = {(t.cli, t.agent) for t in TABLES if t.cli and t.agent}
    assert {"check", "tune-ebs", "wait-ready", "models sync", "models verify", "storage plan",
            "storage probe"} == {cli for cli, _ in shared}
    assert {t.cli for t in TABLES if not t.agent} == {"layers", "zipapp"}
    assert {t.agent for t in TABLES if not t.cli} == {"facts", "gpus", "door-health", "storage-ensure"}


# --- each row, on each front end that has it ---------------------------------------------------------------


def table_id(table: Command) -> str:
    return table.cli or table.agent


def cli_param(table: Command, row: Option) -> Any:
    return next((p for p in cli_commands()[table.cli].params if p.name == row.key), None)


def agent_action(table: Command, row: Option) -> Any:
    parser = agent_subparsers()[0][table.agent]
    return next((a for a in parser._actions if a.dest == row.key), None)


def squeezed(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("table", [t for t in TABLES if t.cli], ids=table_id)
def test_the_cli_offers_exactly_its_rows_with_their_defaults(table: Command) -> None:
    command = cli_commands()[table.cli]
    rows = table.rows(CLI)
    assert [p.name for p in command.params if p.name != "help"] == [row.key for row in rows]
    for row in rows:
        param = cli_param(table, row)
        assert row.help in squeezed(param.help or ""), row.name
        if row.positional:
            assert param.param_type_name == "argument" and param.required == row.required
            continue
        assert sorted(param.opts + param.secondary_opts) == sorted(row.flags), row.name
        assert bool(param.multiple) == row.repeat and param.required == row.required, row.name
        assert bool(param.is_flag) == (row.kind == "flag"), row.name
        if not row.required:
            assert param.default == row.default, row.name


@pytest.mark.parametrize("table", [t for t in TABLES if t.agent], ids=table_id)
def test_the_agent_offers_exactly_its_rows_with_their_defaults(table: Command) -> None:
    parser = agent_subparsers()[0][table.agent]
    rows = table.rows(AGENT)
    assert [a.dest for a in parser._actions if a.dest != "help"] == [row.key for row in rows]
    for row in rows:
        action = agent_action(table, row)
        assert row.help in squeezed((action.help or "").replace("%%", "%")), row.name
        if row.positional:
            assert action.option_strings == [] and action.nargs == ("+" if row.repeat else None)
            continue
        assert sorted(action.option_strings) == sorted(row.flags), row.name
        assert action.default == row.default if row.kind != "flag" else action.default is False, row.name
        assert action.required == row.required and (type(action).__name__ == "_AppendAction") == row.repeat
        assert action.type is None and action.choices is None  # the table converts, in the CLI's words


def cli_help(table: Command) -> str:
    result = CliRunner().invoke(app, [*table.cli.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.stdout


def agent_help(table: Command) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert agent_main([table.agent, "--help"]) == 0
    return out.getvalue()


@pytest.mark.parametrize("table", TABLES, ids=table_id)
def test_every_row_shows_in_the_help_of_each_front_end_that_has_it(table: Command) -> None:
    helps = {front: (cli_help if front == CLI else agent_help)(table) for front in table.fronts}
    for front, text in helps.items():
        for row in table.rows(front):
            assert (row.shown_metavar if row.positional else row.name) in text, (front, row.name)
            assert row.help.split()[0] in text, (front, row.name)
            if row.example:  # help wraps long words at their hyphens: compared without white space
                assert "".join(row.example.split()) in "".join(text.split()), (front, row.name)
        for row in table.options:
            if not row.has(front) and not any(r.name == row.name for r in table.rows(front)):
                assert f"{row.name} " not in text and f"{row.name}\n" not in text, (front, row.name)


@pytest.mark.parametrize("table", [t for t in TABLES if set(t.fronts) == set(BOTH)], ids=table_id)
def test_an_option_both_front_ends_have_has_one_default(table: Command) -> None:
    cli = {p.opts[0]: p for p in cli_commands()[table.cli].params if p.opts and p.opts[0].startswith("--")}
    parser = agent_subparsers()[0][table.agent]
    agent = {a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0]: a
             for a in parser._actions if a.option_strings and a.dest != "help"}
    declared_apart = {row.name for row in table.options if len(row.fronts) == 1 and
                      any(other.name == row.name and other is not row for other in table.options)}
    for name in (set(cli) & set(agent)) - declared_apart:
        assert cli[name].default == agent[name].default, name
    assert (set(cli) & set(agent)) - declared_apart == {
        r.name for r in table.options if set(r.fronts) == set(BOTH) and not r.positional}
    assert declared_apart <= {"--format"}  # check's: table|json|prometheus on the CLI, json|prometheus on the agent


@pytest.mark.parametrize("table", [t for t in TABLES if t.parsers], ids=table_id)
def test_a_row_and_the_parse_it_feeds_have_one_default(table: Command) -> None:
    for parse in table.parsers:
        parameters = inspect.signature(parse).parameters
        fed = [row for row in table.options if row.key in parameters]
        assert fed, f"{parse.__qualname__} takes none of {table_id(table)}'s options"
        for row in fed:
            default = parameters[row.key].default
            if default is not inspect.Parameter.empty:
                assert default == row.default, (parse.__qualname__, row.name)


def test_every_command_takes_json_on_every_front_end() -> None:
    """The CLI prints JSON with it; the agent, which prints JSON always, takes it too (docs/zipapp.md)."""
    for table in TABLES:
        assert {front for row in table.options if row.name == "--json" for front in row.fronts} >= set(table.fronts)


def test_every_number_has_bounds_that_hold_its_default() -> None:
    for table in TABLES:
        for row in table.options:
            if row.kind in ("int", "number"):
                assert row.minimum is not None and row.maximum is not None and row.minimum <= row.maximum
                if row.default is not None:
                    assert row.minimum <= row.default <= row.maximum, row.name
            if row.choices and row.default is not None:
                assert row.default in row.choices, row.name


# --- the same refusals ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    table: Command
    row: Option
    bad: str

    def __str__(self) -> str:
        return f"{table_id(self.table)} {self.row.name}={self.bad!r}"


def bad_values(row: Option) -> list[str]:
    spaced = [" 5", "5\n", "\t5"]
    if row.kind == "int":
        assert row.minimum is not None and row.maximum is not None
        return ["abc", "1.5", "nan", "inf", "9" * 400, "1e3", *spaced, str(int(row.minimum) - 1),
                str(int(row.maximum) + 1)]
    if row.kind == "number":
        assert row.minimum is not None and row.maximum is not None
        return ["abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "9" * 400, *spaced,
                repr(row.minimum - 1), repr(row.maximum * 2 + 1)]
    if row.kind in ("flag", "name"):
        return []  # a flag takes no value; a name is judged by the feature's own grammar (tested with it)
    values = ["x ", " x", "x\n", "x\x00y"]
    if row.kind == "place":
        values += ["/srv/../etc", "../up", "a/.."]
    if row.choices:
        values += ["bogus", f"{row.choices[0]} ", row.choices[0].upper()]
    return values


CASES = [Case(table, row, bad) for table in TABLES for row in table.options for bad in bad_values(row)]


def required_args(table: Command, front: str, but: Option | None) -> list[str]:
    """What the command needs besides the option under test: a value each required row takes."""
    args: list[str] = []
    for row in table.rows(front):
        if row.required and row is not but:
            args += ["x"] if row.positional else [row.name, "x"]
    return args


def run_cli(table: Command, args: list[str]) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*table.cli.split(), *args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def run_agent(table: Command, args: list[str]) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agent_main([table.agent, *args])
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_both_front_ends_refuse_a_bad_value_alike_before_the_command_runs(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    answers = {}
    for front in case.table.fronts:
        if not case.row.has(front):
            continue
        args = [*required_args(case.table, front, case.row), f"{case.row.name}={case.bad}"]
        answers[front] = (run_cli if front == CLI else run_agent)(case.table, args)
    assert answers
    for code, error in answers.values():
        assert code == 2 and error["exit_code"] == 2, error
        assert set(error) == {"error", "remedy", "exit_code"}
        assert case.row.name in error["error"] and "--help" in error["remedy"], error
        assert "\x00" not in error["error"] and "\n" not in error["error"]
    assert len({json.dumps(answer, sort_keys=True) for answer in answers.values()}) == 1, answers


@pytest.mark.parametrize("table", [t for t in TABLES if set(t.fronts) == set(BOTH)], ids=table_id)
def test_what_is_not_typed_reaches_the_command_as_the_same_default(table: Command) -> None:
    """click hands a default on as text (and a repeatable option unused as an empty tuple), argparse as
    declared: the table makes the same values of both."""
    cli = cli_commands()[table.cli].make_context(table.cli, required_args(table, CLI, but=None))
    cli_values = table.values(cli.params, CLI).as_dict()
    args = agent_subparsers()[0][table.agent].parse_args(required_args(table, AGENT, but=None))
    agent_values = table.values(vars(args), AGENT).as_dict()
    shared = {row.key for row in table.options if set(row.fronts) == set(BOTH)}
    assert {k: cli_values[k] for k in shared} == {k: agent_values[k] for k in shared}
    for row in table.options:
        if set(row.fronts) == set(BOTH) and not row.required:
            assert cli_values[row.key] == ([] if row.positional and row.repeat else row.default), row.name


# --- adding an option is one row ------------------------------------------------------------------------------


def test_a_new_row_is_on_both_front_ends_with_no_other_edit() -> None:
    """A command built from a table with one row nobody declared anywhere else: both front ends list it in
    their help, hand the command the same value, and refuse a bad one in the same words."""
    table = Command("demo", "demo", "a command made for this test", (
        Option("--new-thing", "A thing declared in this row only.", kind="int", default=3, minimum=0, maximum=9,
               example="--new-thing 4"),
        json_flag("the values"),
    ))
    seen: dict[str, dict[str, Any]] = {}

    def run_cli(values: Values) -> None:
        seen["cli"] = values.as_dict()

    def run_agent(values: Values) -> int:
        seen["agent"] = values.as_dict()
        return 0

    cli = typer.Typer()
    cli.command("demo")(typer_command(table, run_cli))
    parser = argparse.ArgumentParser(prog="gpuhost-agent")
    handlers: dict[str, AgentCommand] = {}
    add_command(parser.add_subparsers(dest="command"), table, run_agent, handlers)

    assert "A thing declared in this row only." in CliRunner().invoke(cli, ["--help"]).stdout
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    assert "--new-thing" in out.getvalue() and "A thing declared in this row only." in out.getvalue()
    assert CliRunner().invoke(cli, ["--new-thing", "5"]).exit_code == 0
    assert handlers["demo"](parser.parse_args(["demo", "--new-thing", "5"])) == 0
    assert seen["cli"] == seen["agent"] == {"new_thing": 5, "json": False}
    assert CliRunner().invoke(cli, []).exit_code == 0 and seen["cli"]["new_thing"] == 3

    refused = CliRunner().invoke(cli, ["--new-thing", "10", "--json"])
    with pytest.raises(UsageError) as caught:
        handlers["demo"](parser.parse_args(["demo", "--new-thing", "10"]))
    assert refused.exit_code == 2
    assert json.loads(refused.stdout) == failure_of(caught.value).to_dict()
    assert failure_of(caught.value).message == "--new-thing must be a whole number from 0 to 9, got '10'"
