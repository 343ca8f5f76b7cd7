"""The Docker collector against real daemons and real containers created here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from gpuhost.engine import EngineClient, EngineError, EngineUnavailable, LogDemuxer
from gpuhost.facts.docker import collect_docker
from gpuhost.facts.source import SourceStatus
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import evaluate
from gpuhost.rules.bpf import legacy_paths
from tests.support.dockerd import PrivateDockerd
from tests.support.images import import_busybox

pytestmark = pytest.mark.docker

RUNC = shutil.which("runc") or "/usr/sbin/runc"
DAEMON_CONFIG = {
    "runtimes": {
        "nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []},
        "gpuhost-extra": {"path": RUNC},
    },
    "features": {"buildkit": True},
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[PrivateDockerd]:
    with PrivateDockerd("facts", DAEMON_CONFIG) as private:
        yield private


def create(client: EngineClient, name: str, image: str, env: list[str] | None = None, **host_config: Any) -> str:
    body: dict[str, Any] = {
        "Image": image,
        "Cmd": ["sleep", "300"],
        "Env": env or [],
        "HostConfig": {"NetworkMode": "none", **host_config},
    }
    created = client.request("POST", "/containers/create", params={"name": name}, body=body)
    return str(created["Id"])


@pytest.fixture(scope="module")
def containers(daemon: PrivateDockerd) -> dict[str, str]:
    client = daemon.client()
    image = import_busybox(client)
    ids = {
        "plain": create(client, "plain", image),
        "gpus": create(
            client, "gpus", image, DeviceRequests=[{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
        ),
        "nvidia": create(client, "nvidia", image, ["NVIDIA_VISIBLE_DEVICES=all"], Runtime="nvidia"),
        "void": create(client, "void", image, ["NVIDIA_VISIBLE_DEVICES=void"], Runtime="nvidia"),
        "cdi": create(
            client, "cdi", image, DeviceRequests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]
        ),
        "extra": create(client, "extra", image, Runtime="gpuhost-extra"),
    }
    client.request("POST", f"/containers/{ids['plain']}/start")
    client.request("POST", f"/containers/{ids['extra']}/start")
    return ids


def test_collects_versions_runtimes_and_containers(daemon: PrivateDockerd, containers: dict[str, str]) -> None:
    facts = collect_docker(daemon.client(), daemon_json_path=str(daemon.config_path))
    assert facts.status is SourceStatus.OK
    version = daemon.client().get("/version")
    assert facts.server_version == version["Version"]
    assert facts.runc_version and facts.runc_version[0].isdigit()
    assert {"runc", "nvidia", "gpuhost-extra"} <= set(facts.runtimes)
    assert facts.runtimes["nvidia"] == "/usr/bin/nvidia-container-runtime"
    assert facts.runtime_binaries["nvidia"] == ""  # the toolkit is not installed on this machine
    assert facts.runtime_binaries["gpuhost-extra"] == RUNC
    assert facts.default_runtime == "runc"
    assert facts.daemon_json == DAEMON_CONFIG
    assert facts.data_root.startswith(str(daemon.base))
    assert facts.data_root_location is not None
    assert facts.data_root_location.free_bytes and facts.data_root_location.free_bytes > 0

    by_name = {c.name: c for c in facts.containers}
    assert set(by_name) == set(containers)
    assert by_name["plain"].state == "running"
    assert by_name["plain"].gpu_paths == []
    assert by_name["gpus"].state == "created"
    assert by_name["gpus"].gpu_paths == ["device-requests"]
    assert by_name["gpus"].device_requests[0]["Capabilities"] == [["gpu"]]
    assert by_name["nvidia"].gpu_paths == ["nvidia-runtime"]
    assert by_name["nvidia"].nvidia_visible_devices == "all"
    assert by_name["void"].gpu_paths == []
    assert by_name["cdi"].gpu_paths == ["cdi"]
    assert by_name["cdi"].cdi_devices == ["nvidia.com/gpu=all"]
    assert by_name["extra"].runtime == "gpuhost-extra"
    assert by_name["extra"].state == "running"
    assert legacy_paths_names(facts) == ["container gpus (created) uses --gpus (DeviceRequests)"]


def legacy_paths_names(docker_facts: Any) -> list[str]:
    return legacy_paths(HostFacts(docker=docker_facts))


def test_rules_on_the_real_daemon(daemon: PrivateDockerd, containers: dict[str, str]) -> None:
    facts = HostFacts(docker=collect_docker(daemon.client(), daemon_json_path=str(daemon.config_path)))
    findings = evaluate(facts)
    runtime = [f for f in findings if f.id == "docker.nvidia-runtime"]
    assert [f.severity for f in runtime] == [Severity.FAIL]
    assert "/usr/bin/nvidia-container-runtime, which does not exist" in runtime[0].message
    gpus = [f for f in findings if f.id == "bpf.gpus-container"]
    assert [f.evidence["container"] for f in gpus] == ["gpus"]


def test_unreachable_daemon_is_absent_not_a_traceback(tmp_path: Any) -> None:
    facts = collect_docker(EngineClient(f"unix://{tmp_path}/nothing.sock"), daemon_json_path=str(tmp_path / "none"))
    assert facts.status is SourceStatus.ABSENT
    assert "Docker is not running" in facts.error
    finding = next(f for f in evaluate(HostFacts(docker=facts)) if f.id == "docker.engine")
    assert finding.severity is Severity.FAIL


def test_invalid_daemon_json_is_reported(daemon: PrivateDockerd, tmp_path: Any) -> None:
    broken = tmp_path / "daemon.json"
    broken.write_text('{"features": {"cdi": true,}}')
    facts = collect_docker(daemon.client(), daemon_json_path=str(broken))
    assert facts.status is SourceStatus.OK
    assert "not valid JSON" in facts.daemon_json_error
    finding = next(f for f in evaluate(HostFacts(docker=facts)) if f.id == "docker.daemon-json")
    assert finding.severity is Severity.FAIL


def test_engine_errors_and_log_stream(daemon: PrivateDockerd, containers: dict[str, str]) -> None:
    client = daemon.client()
    with pytest.raises(EngineError) as info:
        client.get("/containers/does-not-exist/json")
    assert info.value.status == 404
    image = import_busybox(client, tag="logs")
    body = {
        "Image": image,
        "Cmd": ["sh", "-c", "echo out-line; echo err-line >&2; echo partial"],
        "HostConfig": {"NetworkMode": "none"},
    }
    cid = client.request("POST", "/containers/create", params={"name": "logs"}, body=body)["Id"]
    client.request("POST", f"/containers/{cid}/start")
    client.request("POST", f"/containers/{cid}/wait", timeout=30)
    demux = LogDemuxer(tty=False)
    lines = []
    for chunk in client.stream(f"/containers/{cid}/logs", params={"stdout": True, "stderr": True}):
        lines.extend(demux.feed(chunk))
    lines.extend(demux.flush())
    assert sorted(lines) == [("stderr", "err-line"), ("stdout", "out-line"), ("stdout", "partial")]


def test_shared_daemon_answers_through_the_default_socket() -> None:
    try:
        client = EngineClient()
        client.ping()
    except EngineUnavailable:
        pytest.fail("no dockerd answers on the default socket: scripts/test starts one")
    facts = collect_docker(client)
    assert facts.status is SourceStatus.OK
    assert json.dumps(facts.server_version)
    assert facts.data_root
