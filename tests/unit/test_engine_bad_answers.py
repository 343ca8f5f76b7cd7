"""The Engine API client against addresses that answer badly: each is a bad answer (exit 3), in bounded time.

The servers run on a unix socket in a temporary directory and on 127.0.0.1 (tests/support/bad_servers.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.cli import app
from gpuhost.engine import EngineBadAnswer, EngineClient, EngineError
from tests.support.bad_servers import DOCKER_HEADERS, SSH_BANNER, BadServer, Script, trickled_body, trickled_headers

BAD_ANSWERS = {
    "ssh-banner": Script(prefix=SSH_BANNER, answer_before_request=True),
    "short-body": Script.body(b'{"Version": "27.', length=400),
    "json-list": Script.body(b"[]"),
    "list-of-numbers": Script.body(b"[1, 2]"),
    "nan": Script.body(b'{"Version": NaN}'),
    "overflowing-number": Script.body(b'{"Size": 1e400}'),
    "not-json": Script.body(b"<html>hello</html>", content_type="text/html"),
    "broken-json": Script.body(b'{"Version": '),
    "deep-json": Script.body(b"[" * 100_000 + b"]" * 100_000),
    "garbage-status": Script(prefix=b"HTTP/1.1 abc\r\n\r\n"),
}
EXPECTED = {
    "ssh-banner": "not an HTTP answer",
    "short-body": "cut short",
    "json-list": "expected a JSON object",
    "list-of-numbers": "expected a JSON object",
    "nan": "not valid JSON",
    "overflowing-number": "not valid JSON",
    "not-json": "expected a JSON object",
    "broken-json": "not valid JSON",
    "deep-json": "not valid JSON",
    "garbage-status": "not an HTTP answer",
}


@pytest.fixture(params=["unix", "tcp"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return str(tmp_path) if request.param == "unix" else None


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_a_bad_answer_is_an_engine_error(name: str, where: str | None) -> None:
    with BadServer(BAD_ANSWERS[name], where) as server:
        client = EngineClient(server.address, timeout=2.0)
        started = time.monotonic()
        with pytest.raises(EngineBadAnswer, match=EXPECTED[name]) as caught:
            client.get("/version")
    assert time.monotonic() - started < 2.0
    assert isinstance(caught.value, EngineError)  # every front end maps EngineError to exit 3
    assert server.address in str(caught.value)


@pytest.mark.parametrize("script", [Script(trickle=trickled_headers(), interval=0.1), trickled_body()],
                         ids=["headers", "body"])
def test_a_server_that_trickles_meets_the_total_deadline(script: Script, where: str | None) -> None:
    script.interval = 0.1  # ten bytes a second: each read is quick, the whole answer never ends
    with BadServer(script, where) as server:
        client = EngineClient(server.address, timeout=0.4)
        started = time.monotonic()
        with pytest.raises(EngineBadAnswer, match=r"no complete answer within 0\.4 s"):
            client.get("/version")
        elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 1.2


def test_a_silent_server_is_a_bad_answer_not_docker_absent(where: str | None) -> None:
    # one byte at once, then nothing: the connection is made, the answer never comes
    silent = Script(trickle=b"x", interval=5.0)
    with BadServer(silent, where) as server, pytest.raises(EngineBadAnswer, match=r"within 0\.3 s"):
        EngineClient(server.address, timeout=0.3).get("/info")


def test_an_answer_larger_than_the_cap_is_refused_without_reading_it_all(where: str | None) -> None:
    endless = Script(prefix=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[",
                     filler_bytes=100 * 1024 * 1024)
    with BadServer(endless, where) as server:
        client = EngineClient(server.address, timeout=5.0, max_answer_bytes=1024 * 1024)
        with pytest.raises(EngineBadAnswer, match=r"larger than 1\.0 MiB"):
            client.get("/containers/json")
    assert server.bytes_sent < 50 * 1024 * 1024
    declared = Script.body(b"[]", length=10**12)
    with BadServer(declared, where) as server, pytest.raises(EngineBadAnswer, match="larger than"):
        EngineClient(server.address, timeout=5.0).get("/containers/json")


def test_shapes_follow_the_endpoint(where: str | None) -> None:
    def answer(line: str) -> Script:
        if "/containers/json" in line:
            return Script.body(b'[{"Id": "a"}]')
        if "/history" in line:
            return Script.body(b'[{"Id": "a"}, "not an object"]')
        if "/_ping" in line:
            return Script.body(b"OK", content_type="text/plain")
        return Script.body(b'[{"Id": "a"}]')

    with BadServer(answer, where) as server:
        client = EngineClient(server.address, timeout=2.0)
        assert client.get("/containers/json") == [{"Id": "a"}]
        assert client.ping()
        with pytest.raises(EngineBadAnswer, match="expected a JSON list of objects"):
            client.get("/images/x/history")
        with pytest.raises(EngineBadAnswer, match="expected a JSON object"):
            client.get("/containers/x/json")


def test_an_error_status_with_a_huge_body_is_still_an_error(where: str | None) -> None:
    script = Script(prefix=b"HTTP/1.1 404 Not Found\r\n" + DOCKER_HEADERS +
                    b"Content-Type: application/json\r\nConnection: close\r\n\r\n",
                    filler_bytes=50 * 1024 * 1024, filler=b"x")
    with BadServer(script, where) as server, pytest.raises(EngineError) as caught:
        EngineClient(server.address, timeout=5.0).get("/containers/x/json")
    assert caught.value.status == 404 and len(str(caught.value)) < 2000
    assert server.bytes_sent < 40 * 1024 * 1024


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("name", ["ssh-banner", "short-body", "json-list", "nan"])
def test_layers_and_wait_ready_on_a_bad_docker_address_exit_3(name: str, tmp_path: Path) -> None:
    with BadServer(BAD_ANSWERS[name], str(tmp_path)) as server:
        for command in (["layers", "comfyui:0.3.64"], ["wait-ready", "comfyui"]):
            started = time.monotonic()
            result = run_cli(*command, "--docker-host", server.address, "--json")
            assert time.monotonic() - started < 15
            assert result.exit_code == 3, (command, result.output)
            payload = strict_json(result.stdout)
            assert payload["exit_code"] == 3 and server.address in payload["error"]
            assert "Traceback" not in result.output


def test_check_on_a_docker_address_that_answers_ssh_is_unreadable(tmp_path: Path) -> None:
    with BadServer(BAD_ANSWERS["ssh-banner"], str(tmp_path)) as server:
        result = run_cli("check", "--docker-host", server.address, "--json")
    assert result.exit_code == 3, result.output
    payload = strict_json(result.stdout)
    assert "docker" in payload["unreadable_sources"]
    assert server.address in json.dumps(payload["facts"]["docker"])
