"""Reading a ComfyUI container's address and times from Engine API inspect bodies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuhost.comfyui.container import container_from_inspect, parse_timestamp, since_param, split_log_line


def inspect_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Id": "4f1c" * 16,
        "Name": "/comfyui",
        "RestartCount": 0,
        "Config": {"Image": "comfyui:0.3.64", "Cmd": ["python", "main.py", "--listen", "0.0.0.0"], "Env": [],
                   "Tty": False, "Labels": {"gpuhost.comfyui": "1"}},
        "State": {"Status": "running", "Running": True, "ExitCode": 0, "OOMKilled": False,
                  "StartedAt": "2026-11-23T07:19:02.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z"},
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Ports": {"8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18188"}]}},
    }
    for key, value in overrides.items():
        body[key].update(value)
    return body


def test_bridge_container_is_probed_through_its_published_port() -> None:
    container = container_from_inspect(inspect_body())
    assert (container.name, container.listen, container.port, container.host_network) == (
        "comfyui", "0.0.0.0", 8188, False)
    assert container.probe_url() == ("http://127.0.0.1:18188/system_stats", "")
    assert container.started_at == pytest.approx(1795418342.123456789)
    assert container.finished_at is None


def test_wildcard_binding_is_probed_on_loopback_and_an_unpublished_port_says_so() -> None:
    wildcard = inspect_body(NetworkSettings={"Ports": {"8188/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8188"},
                                                                    {"HostIp": "::", "HostPort": "8188"}]}})
    assert container_from_inspect(wildcard).probe_url()[0] == "http://127.0.0.1:8188/system_stats"
    unpublished = container_from_inspect(inspect_body(NetworkSettings={"Ports": {"8188/tcp": None}}))
    url, why = unpublished.probe_url()
    assert url == "" and "8188/tcp is not published" in why


def test_host_network_port_from_the_command_or_the_environment() -> None:
    from_cmd = inspect_body(HostConfig={"NetworkMode": "host"},
                            Config={"Cmd": ["python", "main.py", "--listen", "127.0.0.1", "--port=8190"]})
    container = container_from_inspect(from_cmd)
    assert container.probe_url() == ("http://127.0.0.1:8190/system_stats", "")
    # the GUI line's address wins once it is printed
    assert container.probe_url(8191, "0.0.0.0") == ("http://127.0.0.1:8191/system_stats", "")
    from_env = inspect_body(HostConfig={"NetworkMode": "host"},
                            Config={"Cmd": [], "Env": ["COMFY_CMDLINE_EXTRA=--fast --port 8288 --listen 10.0.0.5"]})
    container = container_from_inspect(from_env)
    assert (container.port, container.listen) == (8288, "10.0.0.5")
    assert container.probe_url()[0] == "http://10.0.0.5:8288/system_stats"


def test_exited_container() -> None:
    body = inspect_body(State={"Status": "exited", "Running": False, "ExitCode": 1,
                               "FinishedAt": "2026-11-23T07:19:14.000000000Z"})
    container = container_from_inspect(body)
    assert (container.status, container.exit_code, container.running) == ("exited", 1, False)
    assert container.finished_at == pytest.approx(1795418354.0)


def test_timestamps() -> None:
    assert parse_timestamp("2026-11-23T07:19:02Z") == 1795418342.0
    assert parse_timestamp("2026-11-23T08:19:02.5+01:00") == 1795418342.5
    assert parse_timestamp("0001-01-01T00:00:00Z") is None
    assert parse_timestamp("yesterday") is None
    assert split_log_line("2026-11-23T07:19:02.250000000Z Device: cpu") == (1795418342.25, "Device: cpu")
    assert split_log_line("no stamp") == (None, "no stamp")
    assert float(since_param(1795418342.25)) == pytest.approx(1795418342.249, abs=1e-6)


# --- what leaves the host of a container's command line, environment and labels ---------------

SECRET = "Sx9sekrit"  # in every hostile place below; no fact may carry it


def hostile_inspect() -> dict[str, Any]:
    return inspect_body(
        Config={
            "Entrypoint": ["/entrypoint.sh", f"--token={SECRET}1"],
            "Cmd": ["python", "main.py", "--api-key", f"{SECRET}2", "--listen", "0.0.0.0", "--port", "8190"],
            "Env": [f"HF_TOKEN={SECRET}3", f"AWS_SECRET_ACCESS_KEY={SECRET}4", "NVIDIA_VISIBLE_DEVICES=all",
                    f"COMFY_CMDLINE_EXTRA=--api-key {SECRET}5 --listen", f"DANGLING={SECRET}6 --port"],
            "Labels": {"gpuhost.comfyui": "1", "traefik.http.middlewares.auth.basicauth.users": f"u:{SECRET}7"},
        },
        HostConfig={"NetworkMode": "host", "PortBindings": {"8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8188",
                                                                          "Note": f"{SECRET}8"}]}},
    )


def test_container_facts_keep_only_what_the_rules_read() -> None:
    import json

    from gpuhost.facts.docker import gpu_paths_of
    from gpuhost.model import to_jsonable

    body = hostile_inspect()
    container = container_from_inspect(body)
    # the extra command line's bare --listen (every address) comes last and wins; the port from the command
    assert (container.listen, container.port) == ("0.0.0.0,::", 8190)
    assert container.labels == {"gpuhost.comfyui": "1"}
    access = gpu_paths_of(body, {})
    assert access.labels == {"gpuhost.comfyui": "1"} and access.nvidia_visible_devices == "all"
    assert access.ports == {"8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8188"}]}
    for shown in (json.dumps(to_jsonable(container)), json.dumps(to_jsonable(access)), repr(container),
                  repr(access)):
        assert SECRET not in shown


def test_listen_and_port_as_comfyui_reads_them() -> None:
    from gpuhost.comfyui.container import LISTEN_ALL, ComfyArguments, parse_comfy_arguments

    assert parse_comfy_arguments([]) == ComfyArguments("", 0)
    assert parse_comfy_arguments(["--listen"]) == ComfyArguments(LISTEN_ALL, 0)
    assert parse_comfy_arguments(["--listen", "--port", "1"]) == ComfyArguments(LISTEN_ALL, 1)
    assert parse_comfy_arguments(["--listen=10.0.0.5,::1", "--port=8190"]) == ComfyArguments("10.0.0.5,::1", 8190)
    assert parse_comfy_arguments(["--port", "1", "--port", "2"]) == ComfyArguments("", 2)  # the last one wins
    assert parse_comfy_arguments(["--port", "8188"], ["--port 9000"]) == ComfyArguments("", 9000)
    # no token runs into the next variable: a flag at the end of one takes nothing from the next
    assert parse_comfy_arguments([], ["--port", "8189 x"]) == ComfyArguments("", 0)
    assert parse_comfy_arguments([], ["--listen", "hunter2secret"]) == ComfyArguments(LISTEN_ALL, 0)
    # values that are not an address or a port are not kept
    assert parse_comfy_arguments(["--listen", "a;rm -rf", "--port", "99999"]) == ComfyArguments("", 0)
    assert parse_comfy_arguments(["--port", "0", "--port=-1", "--port=1e3"]) == ComfyArguments("", 0)


TOKEN = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
FLAG = st.sampled_from(["--listen", "--port", "--api-key", "--token", "--cpu", "--output-directory", "-v"])


@given(st.lists(st.one_of(FLAG, TOKEN), max_size=16), st.lists(st.lists(st.one_of(FLAG, TOKEN), max_size=6),
                                                                  max_size=4))
def test_only_the_values_of_listen_and_port_leave(argv: list[str], env: list[list[str]]) -> None:
    from gpuhost.comfyui.container import LISTEN_ALL, LISTEN_RE, parse_comfy_arguments

    extra = [" ".join(tokens) for tokens in env]
    parsed = parse_comfy_arguments(argv, extra)
    streams = [argv] + [value.split() for value in extra]
    listen_values = {LISTEN_ALL, ""}
    port_values = {0}
    for tokens in streams:
        for index, token in enumerate(tokens):
            following = tokens[index + 1] if index + 1 < len(tokens) else ""
            if token == "--listen":
                listen_values.add(following)
            elif token.startswith("--listen="):
                listen_values.add(token[len("--listen="):])
            elif token == "--port" and following.isdigit():
                port_values.add(int(following))
            elif token.startswith("--port=") and token[len("--port="):].isdigit():
                port_values.add(int(token[len("--port="):]))
    # whatever leaves is the value of a --listen/--port token (or ComfyUI's meaning of a bare --listen)
    assert parsed.listen in listen_values
    assert parsed.listen in ("", LISTEN_ALL) or LISTEN_RE.fullmatch(parsed.listen)
    assert parsed.port in port_values and 0 <= parsed.port <= 65535
