"""`gpuhost layers IMAGE` and `gpuhost wait-ready CONTAINER` (CLI and agent) on any name: the exit code is
0-3, stdout under --json is strict JSON, no traceback; a name Docker's grammar refuses is exit 2 and never
reaches the Engine API (a stub engine on a unix socket records what it is asked)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.cli import app
from gpuhost.comfyui.container import check_container_ref, container_from_inspect
from gpuhost.model import UsageError
from tests.support.bad_servers import BadServer, Script, docker_response

NO_SUCH = Script(prefix=docker_response(b'{"message": "No such object"}', status="404 Not Found"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadServer]:
    """An Engine that knows no image and no container: every name it is asked about is a 404."""
    with BadServer(NO_SUCH, str(tmp_path_factory.mktemp("engine"))) as server:
        yield server


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {result.exception!r}") from result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.output


def agent(*args: str) -> tuple[int, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agent_main(list(args))
    return code, strict_json(out.getvalue())


# --- the named cases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("layers", "../../info"),
        ("layers", ".."),
        ("layers", "a b"),
        ("layers", ""),
        ("layers", "comfyui:0.3.64\n"),
        ("wait-ready", ""),
        ("wait-ready", ".."),
        ("wait-ready", "../../info"),
        ("wait-ready", "comfy ui"),
    ],
)
def test_names_docker_would_refuse_are_usage_errors_before_any_call(command: str, name: str, engine: BadServer) -> None:
    asked = len(engine.requests)
    code, stdout, output = cli(command, "--docker-host", engine.address, "--json", "--", name)
    assert code == 2, output
    payload = strict_json(stdout)
    assert payload["exit_code"] == 2
    assert any(why in payload["error"] for why in ("not an image reference", "not a container name", "cannot be empty"))
    assert len(engine.requests) == asked  # the Engine API was never asked


def test_agent_wait_ready_refuses_an_empty_name(engine: BadServer) -> None:
    asked = len(engine.requests)
    code, payload = agent("wait-ready", "", "--docker-host", engine.address)
    assert code == 2 and payload["exit_code"] == 2 and "container" in payload["error"]
    assert len(engine.requests) == asked


def test_a_valid_name_reaches_the_engine(engine: BadServer) -> None:
    asked = len(engine.requests)
    code, stdout, _ = cli("layers", "--docker-host", engine.address, "--json", "ghcr.io/org/comfyui:0.3.64")
    assert code == 2 and "no image 'ghcr.io/org/comfyui:0.3.64'" in strict_json(stdout)["error"]
    code, stdout, _ = cli("wait-ready", "--docker-host", engine.address, "--json", "comfyui-1")
    assert code == 2 and "no container named 'comfyui-1'" in strict_json(stdout)["error"]
    assert engine.requests[asked:] == [
        "GET /images/ghcr.io%2Forg%2Fcomfyui%3A0.3.64/json HTTP/1.1",
        "GET /containers/comfyui-1/json HTTP/1.1",
    ]


@pytest.mark.parametrize("option", ["--write-mibs", "--download-mibs"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e400"])
def test_layers_rates_must_be_finite_positive_numbers(option: str, value: str) -> None:
    code, stdout, output = cli("layers", "comfyui:0.3.64", option, value, "--json",
                               "--docker-host", "unix:///nonexistent/docker.sock")
    assert code == 2, output
    assert option in strict_json(stdout)["error"]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8188/system_stats", "http://127.0.0.1:99999/", "http://x:1 ", ""])
def test_wait_ready_url_must_be_http_with_a_port_in_range(url: str, engine: BadServer) -> None:
    asked = len(engine.requests)
    code, stdout, output = cli("wait-ready", "comfyui", "--url", url, "--docker-host", engine.address, "--json")
    assert code == 2, output
    assert "--url" in strict_json(stdout)["error"] and len(engine.requests) == asked
    code, payload = agent("wait-ready", "comfyui", "--url", url, "--docker-host", engine.address)
    assert code == 2 and "--url" in payload["error"]


@pytest.mark.parametrize("ref", ["comfyui", "/comfyui", "comfyui_1.b-2", "a", "4f3c2b1a0e9d"])
def test_container_refs_docker_accepts(ref: str) -> None:
    assert check_container_ref(ref) == ref


@pytest.mark.parametrize("ref", ["", "/", "..", "-x", "_x", "a b", "a/b", "a\n", "a%2F..", "é"])
def test_container_refs_docker_refuses(ref: str) -> None:
    with pytest.raises(UsageError):
        check_container_ref(ref)


# --- properties ------------------------------------------------------------------------------

names = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,30}(:[\w.-]{1,10})?", fullmatch=True),
    st.sampled_from(["..", "../../info", "%2e%2e", "a b", "comfyui\n", "x?y", "x#y", "/", "sha256:" + "a" * 64]),
)


@given(name=names, command=st.sampled_from(["layers", "wait-ready"]))
def test_any_name_gives_a_code_and_strict_json(engine: BadServer, name: str, command: str) -> None:
    asked = len(engine.requests)
    code, stdout, output = cli(command, "--docker-host", engine.address, "--json", "--", name)
    assert code in (0, 1, 2, 3), output
    payload = strict_json(stdout)
    assert payload["exit_code"] == code
    if any(why in payload["error"] for why in ("not an image reference", "not a container name", "cannot be empty")):
        assert len(engine.requests) == asked


@given(name=names)
def test_any_name_through_the_agent(engine: BadServer, name: str) -> None:
    code, payload = agent("wait-ready", "--docker-host", engine.address, "--", name)
    assert code in (0, 1, 2, 3)
    assert payload["exit_code"] == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
inspect_keys = st.sampled_from(
    ["Id", "Name", "Config", "HostConfig", "State", "NetworkSettings", "RestartCount", "Ports", "Env", "Cmd",
     "Entrypoint", "Labels", "Status", "StartedAt", "FinishedAt", "ExitCode", "HostPort", "NetworkMode", "Tty"]
)
inspect_bodies = st.recursive(
    st.dictionaries(inspect_keys, json_values, max_size=6),
    lambda inner: st.dictionaries(inspect_keys, inner | json_values, max_size=6),
    max_leaves=20,
)


@given(body=inspect_bodies)
def test_any_inspect_body_reads_without_error(body: dict[str, Any]) -> None:
    """What an Engine (or something posing as one) says about a container never breaks the reading."""
    container = container_from_inspect(body)
    assert isinstance(container.name, str) and isinstance(container.port, int)
    assert all(isinstance(port, int) for bindings in container.ports.values() for _, port in bindings)
