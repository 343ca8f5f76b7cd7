"""The Docker address, wherever it comes from, and what answers there.

- DOCKER_HOST from the environment is checked like --docker-host: a malformed one is exit 2 before
  anything is read or changed, in every command that talks to Docker (CLI and agent).
- A server that is not Docker (a web server answering 404 to everything, or 200 with a page) is
  exit 3 in every such command, on a unix socket and on tcp://127.0.0.1: never "no container" or
  "no image" (exit 2), which only Docker's own 404 means.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.check import CheckOptions
from gpuhost.cli import app
from gpuhost.engine import DEFAULT_HOST, DockerAddressError, EngineBadAnswer, EngineClient, EngineError, docker_address
from gpuhost.model import UsageError
from tests.support.bad_servers import BadServer, Script, docker_response, http_response

# every command that talks to Docker, as a person types it (each with --json) and as the agent runs it
CLI_COMMANDS = {
    "check": ["check", "--json"],
    "wait-ready": ["wait-ready", "comfyui", "--timeout", "5s", "--json"],
    "layers": ["layers", "comfyui:0.3.64", "--json"],
    "storage plan": ["storage", "plan", "--json"],
    "storage probe": ["storage", "probe", "--size-mib", "16", "--json"],
    "tune-ebs --when-image-present": ["tune-ebs", "--volume-id", "vol-0123456789abcdef0", "--region", "us-east-1",
                                      "--preset", "baseline", "--when-image-present", "comfyui:0.3.64", "--json"],
}
AGENT_COMMANDS = {
    "agent check": ["check"],
    "agent wait-ready": ["wait-ready", "comfyui", "--timeout", "5s"],
    "agent storage-plan": ["storage-plan"],
    "agent storage-probe": ["storage-probe", "--size-mib", "16"],
    "agent tune-ebs --when-image-present": ["tune-ebs", "--volume-id", "vol-0123456789abcdef0", "--region",
                                            "us-east-1", "--preset", "baseline", "--when-image-present",
                                            "comfyui:0.3.64"],
}
NOT_DOCKER = {
    "404-everything": Script(prefix=http_response(b"<html>404 Not Found</html>", status="404 Not Found",
                                                  content_type="text/html")),
    "200-html": Script(prefix=http_response(b"<html>It works!</html>", content_type="text/html")),
    "404-json": Script.body(b'{"message": "Not Found"}', status="404 Not Found"),
}
MALFORMED = ["tpc://127.0.0.1:2375", "tcp://127.0.0.1", "unix://relative.sock", " unix:///var/run/docker.sock",
             "tcp://127.0.0.1:2375\n", "ssh://user@host", "tcp://127.0.0.1:99999"]


def run(name: str, env_host: str | None, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[int, dict[str, Any]]:
    """One command, in this process, with DOCKER_HOST as given; (exit code, its JSON)."""
    if env_host is None:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    else:
        monkeypatch.setenv("DOCKER_HOST", env_host)
    if name in CLI_COMMANDS:
        result = CliRunner().invoke(app, [*CLI_COMMANDS[name], *extra])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        return result.exit_code, json.loads(result.stdout)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agent_main([*AGENT_COMMANDS[name], *extra])
    return code, json.loads(out.getvalue())


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tune-ebs must stop before any AWS call: nothing here answers for AWS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.mark.parametrize("name", sorted(CLI_COMMANDS) + sorted(AGENT_COMMANDS))
@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_docker_host_in_the_environment_is_exit_2(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, payload = run(name, value, monkeypatch)
    assert code == 2 and payload["exit_code"] == 2, payload
    assert payload["error"].startswith("DOCKER_HOST from the environment: "), payload
    assert "Unset DOCKER_HOST" in payload["remedy"]


def test_the_option_wins_over_the_environment_and_an_empty_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with BadServer(NOT_DOCKER["200-html"], str(tmp_path)) as server:
        code, payload = run("layers", "tpc://nowhere:1", monkeypatch, "--docker-host", server.address)
    assert code == 3 and server.address in payload["error"]
    code, payload = run("layers", "tpc://nowhere:1", monkeypatch, "--docker-host", "tpc://x:1")
    assert code == 2 and payload["error"].startswith("--docker-host: ")
    monkeypatch.setenv("DOCKER_HOST", "")
    assert docker_address() == DEFAULT_HOST
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert docker_address() == "tcp://127.0.0.1:2375" and docker_address("unix:///x.sock") == "unix:///x.sock"
    with pytest.raises(DockerAddressError, match=r"^--docker-host: "):
        docker_address("")


def test_a_fleet_check_leaves_the_controllers_docker_host_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tpc://controller:1")
    assert CheckOptions.parse(fleet=True).collect.docker_host is None  # the hosts' agents use their own
    with pytest.raises(UsageError, match="DOCKER_HOST"):
        CheckOptions.parse()
    with pytest.raises(UsageError, match="--docker-host"):
        CheckOptions.parse(fleet=True, docker_host="tpc://x:1")


@pytest.fixture(params=["unix", "tcp"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return str(tmp_path) if request.param == "unix" else None


@pytest.mark.parametrize("server", sorted(NOT_DOCKER))
@pytest.mark.parametrize("name", sorted(CLI_COMMANDS) + sorted(AGENT_COMMANDS))
def test_a_server_that_is_not_docker_is_exit_3(
    name: str, server: str, where: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BadServer(NOT_DOCKER[server], where) as web:
        code, payload = run(name, web.address, monkeypatch)
    assert code == 3, payload
    error = payload["error"] if "error" in payload else payload["facts"]["docker"]["error"]
    assert web.address in error and "not a Docker daemon" in error, error
    assert "no container" not in error and "no image" not in error


def test_agent_facts_say_docker_is_unreadable(where: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    with BadServer(NOT_DOCKER["404-everything"], where) as web:
        monkeypatch.setenv("DOCKER_HOST", web.address)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert agent_main(["facts", "--area", "docker"]) == 0
    docker = json.loads(out.getvalue())["docker"]
    assert docker["status"] == "unreadable" and "not a Docker daemon" in docker["error"]


def test_dockers_own_404_is_a_missing_object_and_one_ping_tells_a_proxy_from_a_web_server(tmp_path: Path) -> None:
    missing = Script(prefix=docker_response(b'{"message": "No such container: x"}', status="404 Not Found"))
    with BadServer(missing, str(tmp_path)) as docker:
        with pytest.raises(EngineError) as caught:
            EngineClient(docker.address).get("/containers/x/json")
        assert caught.value.status == 404 and not isinstance(caught.value, EngineBadAnswer)
        assert docker.requests == ["GET /containers/x/json HTTP/1.1"]  # the headers said Docker: no ping

    def stripped(line: str) -> Script:
        # a proxy in front of Docker that drops its headers: /_ping still answers OK
        if line.startswith("GET /_ping"):
            return Script.body(b"OK", content_type="text/plain")
        return Script.body(b'{"message": "No such container: x"}', status="404 Not Found")

    with BadServer(stripped, str(tmp_path)) as proxied:
        client = EngineClient(proxied.address)
        for _ in range(2):
            with pytest.raises(EngineError) as caught:
                client.get("/containers/x/json")
            assert caught.value.status == 404 and not isinstance(caught.value, EngineBadAnswer)
        assert [r.split()[1] for r in proxied.requests] == ["/containers/x/json", "/_ping", "/containers/x/json"]
