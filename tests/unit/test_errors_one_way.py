"""One way from an error to an exit code (gpuhost.model.failure_of), the same on both front ends.

Every kind of error gpuhost raises says its exit code and remedy; anything else becomes one line with exit 1
(an OSError nothing caught: 3), never a traceback. The same error raised inside the same command prints the
same JSON from `gpuhost ... --json` and from `gpuhost-agent ...`, and the CLI's text says it in two lines.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.cli import app
from gpuhost.ebs.aws import AwsError
from gpuhost.engine import (
    DOCKER_REMEDY,
    DockerAddressError,
    EngineBadAnswer,
    EngineError,
    EnginePermissionDenied,
    EngineUnavailable,
)
from gpuhost.model import ExitCode, GpuhostError, SourceError, UsageError, failure_of
from gpuhost.storage.ensure import StorageError
from gpuhost.userfile import UserFileError

SECRET_URL = "https://user:hunter2@models.example.com/x"

ERRORS: dict[str, tuple[BaseException, int, str]] = {
    "usage": (UsageError("--label 'x' is too long", "Give 12 characters."), 2, "Give 12 characters."),
    "user file": (UserFileError("/etc/x", "missing", "/etc/x does not exist"), 2, ""),
    "docker address": (DockerAddressError("--docker-host: 'tpc://x' ...", "Example: --docker-host unix:///x"), 2,
                       "Example: --docker-host unix:///x"),
    "source": (SourceError("/proc/x", "permission denied", "Run as root."), 3, "Run as root."),
    "aws access": (AwsError("UnauthorizedOperation", "Attach the policy.", ExitCode.SOURCE_UNREADABLE), 3,
                   "Attach the policy."),
    "aws busy": (AwsError("IncorrectModificationState", "Wait for it.", ExitCode.FAILING), 1, "Wait for it."),
    "aws bad input": (AwsError("InvalidParameterValue", "Lower --iops.", ExitCode.USAGE), 2, "Lower --iops."),
    "engine down": (EngineUnavailable("nothing listens at unix:///var/run/docker.sock"), 3, DOCKER_REMEDY),
    "engine denied": (EnginePermissionDenied("permission denied on /var/run/docker.sock"), 3, DOCKER_REMEDY),
    "engine status": (EngineError(500, "server error"), 3, DOCKER_REMEDY),
    "not docker": (EngineBadAnswer("tcp://127.0.0.1:80", "not a Docker daemon"), 3, DOCKER_REMEDY),
    "storage": (StorageError("mkfs.xfs failed", "Look at dmesg."), 1, "Look at dmesg."),
    "os error": (PermissionError(13, "Permission denied", "/srv/models"), 3, ""),
    "unexpected": (RuntimeError("a bug"), 1, ""),
    "unexpected value": (ValueError("math domain error"), 1, ""),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_error_has_one_exit_code_and_a_remedy(name: str) -> None:
    exc, code, remedy = ERRORS[name]
    failure = failure_of(exc)
    assert failure.exit_code == code
    assert failure.remedy == remedy or (not remedy and failure.remedy)
    assert failure.message and "\n" not in failure.message
    assert failure.to_dict() == {"error": failure.message, "remedy": failure.remedy, "exit_code": code}
    if isinstance(exc, GpuhostError):
        assert int(exc.exit_code) == code  # the error says its own code


def test_what_a_failure_says_has_no_credentials_and_no_terminal_controls() -> None:
    for exc in (UsageError(f"cannot read {SECRET_URL}\x1b[31m"), RuntimeError(f"{SECRET_URL}\nsecond\x1b]0;x\x07line"),
                OSError(f"{SECRET_URL}\x1b[2J"), AwsError(f"{SECRET_URL}", f"see {SECRET_URL}", ExitCode.USAGE)):
        failure = failure_of(exc)
        for text in (failure.message, failure.remedy):
            assert "hunter2" not in text and "\x1b" not in text and "\x07" not in text, text
    assert "\n" not in failure_of(RuntimeError("one\ntwo")).message


def cli(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def agent(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agent_main(args)
    return code, out.getvalue()


def raising(exc: BaseException) -> Any:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raise_it


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_the_same_error_in_the_same_command_prints_the_same_json_on_both_front_ends(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    exc, code, _ = ERRORS[name]
    monkeypatch.setattr("gpuhost.cli.storage.plan_docker_storage", raising(exc))
    monkeypatch.setattr("gpuhost.agent.storage.plan_docker_storage", raising(exc))
    args = ["--daemon-json", str(tmp_path / "daemon.json"), "--config", str(tmp_path / "absent")]
    cli_code, cli_out, cli_err = cli(["storage", "plan", *args, "--json"])
    agent_code, agent_out = agent(["storage-plan", *args])
    assert cli_code == agent_code == code
    assert cli_out == agent_out  # to the byte
    assert json.loads(cli_out) == failure_of(exc).to_dict()
    assert "Traceback" not in cli_out + cli_err

    text_code, text_out, text_err = cli(["storage", "plan", *args])
    assert text_code == code and text_out == ""
    lines = text_err.splitlines()
    assert lines[0] == f"gpuhost: error: {failure_of(exc).message}"
    assert lines[1:] == ([f"gpuhost: hint: {failure_of(exc).remedy}"] if failure_of(exc).remedy else [])


def test_an_error_after_the_work_is_done_is_one_line_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """What no command turns into its error (here: the table's rendering) still never shows a traceback."""
    monkeypatch.setattr("gpuhost.cli.storage.print_plan", raising(RuntimeError("rendering broke")))
    code, out, err = cli(["storage", "plan", "--daemon-json", str(tmp_path / "daemon.json"), "--config",
                          str(tmp_path / "absent"), "--docker-host", "unix:///nonexistent/docker.sock"])
    assert code == 1 and out == ""
    assert err.splitlines()[0] == "gpuhost: error: unexpected RuntimeError: rendering broke"
    assert "Traceback" not in err


def test_a_malformed_docker_host_is_the_same_usage_error_from_the_option_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    args = ["--daemon-json", str(tmp_path / "daemon.json"), "--config", str(tmp_path / "absent")]
    monkeypatch.setenv("DOCKER_HOST", "tpc://127.0.0.1:1")
    for cli_args, agent_args in ((["storage", "plan", *args, "--json"], ["storage-plan", *args]),
                                 (["check", "--root", str(tmp_path), "--json"], ["check", "--root", str(tmp_path)])):
        cli_code, cli_out, _ = cli(cli_args)
        agent_code, agent_out = agent(agent_args)
        assert cli_code == agent_code == 2 and cli_out == agent_out
        assert json.loads(cli_out)["error"].startswith("DOCKER_HOST from the environment: ")
