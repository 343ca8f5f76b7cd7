"""What every command shares: JSON out, one way to stop with an error, one error -> exit-code chain,
and the options defined once."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer

from gpuhost.ebs.aws import AwsError
from gpuhost.engine import DockerAddressError, EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.model import ExitCode, SourceError, UsageError, for_humans
from gpuhost.redact import redact_all

if TYPE_CHECKING:
    from rich.text import Text

EXIT_CODES_HELP = (
    "Exit codes: 0 no failing finding; 1 at least one failing finding (--strict: warnings too); "
    "2 bad usage or input; 3 a required source could not be read."
)
DOCKER_REMEDY = "Start Docker, or run as root / a member of the docker group."


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


def fail(code: ExitCode, message: str, remedy: str = "", as_json: bool = False) -> NoReturn:
    """Stop with one actionable message (and the same as JSON when asked)."""
    message, remedy = for_humans(message), for_humans(remedy)
    if as_json:
        emit_json({"error": message, "remedy": remedy, "exit_code": int(code)})
    else:
        typer.echo(f"gpuhost: error: {message}", err=True)
        if remedy:
            typer.echo(f"gpuhost: hint: {remedy}", err=True)
    raise typer.Exit(int(code))


def usage_error_as_json(exc: Exception) -> NoReturn:
    """A usage error typer found while reading the options (`--iops abc`, an unknown option), printed
    as the same JSON error every command prints under --json."""
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", "") or "gpuhost"
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    code = getattr(exc, "exit_code", ExitCode.USAGE)
    emit_json(
        {
            "error": for_humans(f"{command}: {message}"),
            "remedy": f"Run {command} --help for the options.",
            "exit_code": code if code in (1, 2) else int(ExitCode.USAGE),
        }
    )
    sys.exit(code if code in (1, 2) else int(ExitCode.USAGE))


@contextlib.contextmanager
def errors_to_exit(as_json: bool) -> Iterator[None]:
    """The one place an error from a feature becomes a message, a remedy and an exit code."""
    try:
        yield
    except UsageError as exc:
        fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
    except AwsError as exc:
        fail(exc.exit_code, str(exc), exc.remedy, as_json)
    except SourceError as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), exc.remedy, as_json)
    except (EngineUnavailable, EnginePermissionDenied, EngineError) as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), DOCKER_REMEDY, as_json)


def engine_client(docker_host: Optional[str], timeout: float) -> EngineClient:
    try:
        return EngineClient(docker_host, timeout=timeout)
    except DockerAddressError as exc:
        raise UsageError(str(exc), exc.remedy) from exc


def docker_host_option() -> Any:
    return typer.Option(
        None,
        "--docker-host",
        metavar="HOST",
        help="(string) Docker daemon address. Default: $DOCKER_HOST or unix:///var/run/docker.sock. "
        "Example: --docker-host unix:///run/docker.sock",
    )
