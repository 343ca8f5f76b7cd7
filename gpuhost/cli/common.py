"""What every command shares: JSON out, and one way to stop with an error: gpuhost.model.failure_of
turns it into a message, a remedy and an exit code, as it does for the agent."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from gpuhost.model import ExitCode, Failure, failure_of, for_humans
from gpuhost.redact import redact_all

if TYPE_CHECKING:
    from rich.text import Text

EXIT_CODES_HELP = (
    "Exit codes: 0 no failing finding; 1 at least one failing finding (--strict: warnings too); "
    "2 bad usage or input; 3 a required source could not be read."
)


def docs_epilog(page: str, exit_codes: str) -> str:
    """The help epilogue: the command's exit codes and where its reference page is."""
    return f"{exit_codes} Reference: docs/{page}.md"


def emit_json(payload: Any) -> None:
    """Strict JSON on stdout: a NaN or infinity is a bug, never output; no URL in it carries its
    credentials (gpuhost.redact)."""
    sys.stdout.write(json.dumps(redact_all(payload), indent=2, allow_nan=False) + "\n")


def shown(text: str, style: str = "") -> Text:
    """Any text for a rich table cell or line, as text: never read as rich markup (`[/]` in a log line),
    no terminal control in it, no URL credentials (gpuhost.model.for_humans)."""
    from rich.text import Text

    return Text(for_humans(text), style=style)


def print_failure(failure: Failure, as_json: bool) -> None:
    """The JSON error (the agent's, to the byte), or two lines on stderr."""
    if as_json:
        emit_json(failure.to_dict())
    else:
        typer.echo(f"gpuhost: error: {failure.message}", err=True)
        if failure.remedy:
            typer.echo(f"gpuhost: hint: {failure.remedy}", err=True)


def fail(code: ExitCode, message: str, remedy: str = "", as_json: bool = False) -> NoReturn:
    """Stop with one actionable message (and the same as JSON when asked)."""
    print_failure(Failure(int(code), for_humans(message), for_humans(remedy)), as_json)
    raise typer.Exit(int(code))


def wants_json(argv: Sequence[str]) -> bool:
    """Whether a command line asks for JSON: --json, or check's --format json."""
    args = list(argv)
    return "--json" in args or "--format=json" in args or any(
        a == "--format" and b == "json" for a, b in zip(args, args[1:])
    )


def usage_error_as_json(exc: Exception) -> NoReturn:
    """A usage error typer found while reading the options (`--iops abc`, an unknown option), printed
    as the same JSON error every command prints under --json."""
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", "") or "gpuhost"
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    code = getattr(exc, "exit_code", ExitCode.USAGE)
    code = code if code in (1, 2) else int(ExitCode.USAGE)
    print_failure(Failure(code, for_humans(f"{command}: {message}"), f"Run {command} --help for the options."), True)
    sys.exit(code)


@contextlib.contextmanager
def errors_to_exit(as_json: bool) -> Iterator[None]:
    """Any error a command's work raises becomes its message, remedy and exit code (failure_of)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        failure = failure_of(exc)
        print_failure(failure, as_json)
        raise typer.Exit(failure.exit_code) from None
