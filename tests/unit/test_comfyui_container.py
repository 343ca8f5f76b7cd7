"""Reading a ComfyUI container's address and times from Engine API inspect bodies."""

from __future__ import annotations

from typing import Any

import pytest

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
