"""The serving rules on facts: instances on one GPU, on a GPU that is gone, on another GPU than they were
given (gpuhost.rules.instances); a ComfyUI front door beyond loopback without TLS or credentials
(gpuhost.rules.door, on nginx configurations read by gpuhost.facts.nginx); and the instance list of
`check --json` and of a fleet report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuhost.check import report_for
from gpuhost.comfyui.facts import ComfyUIContainerFacts, ComfyUIFacts
from gpuhost.comfyui.readiness import Phase, Verdict
from gpuhost.facts.cdi import collect_cdi
from gpuhost.facts.devices import collect_devices
from gpuhost.facts.docker import DockerFacts, gpu_paths_of
from gpuhost.facts.gpu import GpuDevice, GpuFacts
from gpuhost.facts.nginx import NginxSyntaxError, collect_nginx, parse, tokens
from gpuhost.facts.source import SourceStatus
from gpuhost.fleet.report import HostResult, host_failure
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Severity
from gpuhost.rules import RuleOptions
from gpuhost.rules import door as door_rules
from gpuhost.rules import instances as instance_rules
from tests.support.planted_gpus import gpu_uuid, plant_gpu_host

RUNTIMES = {"nvidia": "/usr/bin/nvidia-container-runtime"}


def container(name: str, env: list[str] | None = None, *, runtime: str = "nvidia", state: str = "running",
              labels: dict[str, str] | None = None, requests: list[dict[str, Any]] | None = None,
              port: int = 0, image: str = "gpuhost-comfyui:0.3.64") -> Any:
    return gpu_paths_of({
        "Id": f"{abs(hash(name)):012x}", "Name": f"/{name}",
        "Config": {"Env": env or [], "Labels": {"gpuhost.comfyui": "1", **(labels or {})}, "Image": image},
        "HostConfig": {"Runtime": runtime, "DeviceRequests": requests or [],
                       "PortBindings": {"8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]} if port else {}},
        "State": {"Status": state},
    }, RUNTIMES)


def instance(number: int, pinned: str, given: str | None = None, given_uuid: str | None = None, **more: Any) -> Any:
    given = pinned if given is None else given
    return container(f"comfyui-{number}", [f"NVIDIA_VISIBLE_DEVICES={pinned}"],
                     labels={"gpuhost.comfyui.instance": str(number), "gpuhost.comfyui.gpu": given,
                             "gpuhost.comfyui.gpu-uuid": given_uuid if given_uuid is not None else given}, **more)


def nvml(count: int, uuid: Any = gpu_uuid) -> GpuFacts:
    return GpuFacts(driver_version="580.95.05", gpus=[GpuDevice(index=n, uuid=uuid(n)) for n in range(count)])


def facts_with(containers: list[Any], gpu: GpuFacts | None = None, **more: Any) -> HostFacts:
    return HostFacts(docker=DockerFacts(containers=containers), gpu=gpu or nvml(4), **more)


def ids(findings: list[Any], severity: Severity = Severity.FAIL) -> list[str]:
    return [f.id for f in findings if f.severity is severity]


def test_four_instances_each_on_its_own_gpu_pass_every_rule() -> None:
    facts = facts_with([instance(n, gpu_uuid(n)) for n in range(4)])
    assert instance_rules.shared(facts, RuleOptions())[0].severity is Severity.OK
    assert instance_rules.gone(facts, RuleOptions()) == []
    assert instance_rules.mismatch(facts, RuleOptions()) == []


@pytest.mark.parametrize("second", ["0", gpu_uuid(0), "all"], ids=["index", "uuid", "all"])
def test_two_instances_on_one_gpu_fail(second: str) -> None:
    facts = facts_with([instance(0, gpu_uuid(0)), instance(1, second)])
    (finding,) = instance_rules.shared(facts, RuleOptions())
    assert finding.severity is Severity.FAIL and finding.id == "comfyui.gpu-shared"
    assert "GPU 0 (" + gpu_uuid(0) + ") is given to 2 ComfyUI instances (comfyui-0, comfyui-1)" in finding.message


def test_a_hand_made_cdi_container_on_an_instances_gpu_is_shared_a_stopped_one_is_not() -> None:
    by_hand = container("by-hand", requests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=1"]}])
    stopped = container("old", ["NVIDIA_VISIBLE_DEVICES=1"], state="exited")
    facts = facts_with([instance(0, gpu_uuid(0)), instance(1, gpu_uuid(1)), by_hand, stopped])
    failing = [f for f in instance_rules.shared(facts, RuleOptions()) if f.severity is Severity.FAIL]
    assert [f.evidence["holders"] for f in failing] == [["by-hand", "comfyui-1"]]


def test_a_gpu_that_is_gone_fails_and_no_gpu_list_judges_nothing() -> None:
    facts = facts_with([instance(n, gpu_uuid(n)) for n in range(4)], gpu=nvml(3))
    (finding,) = instance_rules.gone(facts, RuleOptions())
    assert finding.id == "comfyui.gpu-gone" and finding.evidence["missing"] == [gpu_uuid(3)]
    assert "pinned to GPU " + gpu_uuid(3) + ", which this host does not have (it has 3: 0, 1, 2" in finding.message
    by_index = facts_with([instance(5, "5")], gpu=nvml(4))
    assert ids(instance_rules.gone(by_index, RuleOptions())) == ["comfyui.gpu-gone"]
    unknown = facts_with([instance(5, "5")], gpu=GpuFacts(status=SourceStatus.ABSENT))
    assert instance_rules.gone(unknown, RuleOptions()) == []


def test_a_gpu_that_is_gone_from_a_planted_cdi_host(tmp_path: Path) -> None:
    """Without NVML (the driver not loaded yet), the host's CDI spec is the GPU list."""
    root = plant_gpu_host(tmp_path, 2)
    facts = facts_with([instance(n, gpu_uuid(n)) for n in range(3)], gpu=GpuFacts(status=SourceStatus.ABSENT),
                       cdi=collect_cdi(str(root)), devices=collect_devices(str(root / "dev")))
    (finding,) = instance_rules.gone(facts, RuleOptions())
    assert finding.evidence["missing"] == [gpu_uuid(2)] and finding.evidence["gpu_source"] == "cdi"


def test_an_instance_pinned_elsewhere_than_it_was_given_fails() -> None:
    facts = facts_with([instance(0, gpu_uuid(2), given=gpu_uuid(0))])
    (finding,) = instance_rules.mismatch(facts, RuleOptions())
    assert f"was given GPU {gpu_uuid(0)} but is pinned to {gpu_uuid(2)}" in finding.message


def test_an_index_that_now_holds_another_gpu_fails() -> None:
    """Pinned by index (CDI nvidia.com/gpu=1), given GPU 1 when its UUID was gpu_uuid(1); now slot 1 holds
    another GPU (the order changed)."""
    pinned = container("comfyui-1", requests=[{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=1"]}],
                       labels={"gpuhost.comfyui.instance": "1", "gpuhost.comfyui.gpu": "1",
                               "gpuhost.comfyui.gpu-uuid": gpu_uuid(1)})
    same = facts_with([pinned])
    assert instance_rules.mismatch(same, RuleOptions()) == []
    moved = facts_with([pinned], gpu=nvml(4, uuid=lambda n: gpu_uuid(n + 10)))
    (finding,) = instance_rules.mismatch(moved, RuleOptions())
    assert finding.evidence["now_uuid"] == gpu_uuid(11)
    assert "the GPUs' order changed" in finding.message


def test_the_one_instance_of_old_on_all_gpus_is_judged_by_none() -> None:
    facts = facts_with([container("comfyui", ["NVIDIA_VISIBLE_DEVICES=all"])])
    assert instance_rules.shared(facts, RuleOptions()) == []
    assert instance_rules.gone(facts, RuleOptions()) == []
    assert instance_rules.mismatch(facts, RuleOptions()) == []


# --- nginx ---------------------------------------------------------------------------------------------

DOOR = """
map $cookie_x $route {{ default any; "0" one; }}
upstream any {{ server 127.0.0.1:8188; server 127.0.0.1:8189; }}
upstream one {{ server 127.0.0.1:8188; }}
server {{
    {listen}
    {auth}
    location = /health {{ auth_basic off; return 200; }}
    location /i/0/ {{ proxy_pass http://one/; }}
    location / {{ {location_auth} proxy_pass http://$route; }}
}}
"""


def plant_nginx(root: Path, server: str, **values: str) -> Path:
    (root / "etc" / "nginx" / "conf.d").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "nginx" / "nginx.conf").write_text(
        "user www-data;\nevents { worker_connections 64; }\n# a comment { ;\nhttp {\n    include conf.d/*.conf;\n}\n")
    (root / "etc" / "nginx" / "conf.d" / "door.conf").write_text(server.format(**values))
    return root


def door_facts(tmp_path: Path, listen: str, auth: str = "auth_basic Door;", location_auth: str = "") -> HostFacts:
    root = plant_nginx(tmp_path, DOOR, listen=listen, auth=auth, location_auth=location_auth)
    return HostFacts(docker=DockerFacts(containers=[container("comfyui-0", port=8188),
                                                   container("comfyui-1", port=8189)]),
                     nginx=collect_nginx(str(root)))


@pytest.mark.parametrize(
    ("listen", "auth", "location_auth", "failing"),
    [
        ("listen 127.0.0.1:8443;", "", "", []),  # loopback: neither needed
        ("listen [::1]:8443;", "", "", []),
        ("listen 0.0.0.0:8443 ssl;", "auth_basic Door;", "", []),
        ("listen 8443 ssl;", "auth_basic $realm;", "", []),
        ("listen 0.0.0.0:8080;", "auth_basic Door;", "", ["door.tls"]),
        ("listen 8080;", "auth_basic Door;", "", ["door.tls"]),
        ("listen *:8080;", "auth_basic Door;", "", ["door.tls"]),
        ("listen [::]:8443 ssl;", "", "", ["door.auth"]),
        ("listen 10.0.0.5:8443 ssl;", "auth_basic Door;", "auth_basic off;", ["door.auth"]),
        ("", "", "", ["door.tls", "door.auth"]),  # no listen: *:80
        ("listen 127.0.0.1:8443; listen 0.0.0.0:80;", "", "", ["door.tls", "door.auth"]),
    ],
)
def test_a_front_door_beyond_loopback_needs_tls_and_credentials(
        tmp_path: Path, listen: str, auth: str, location_auth: str, failing: list[str]) -> None:
    findings = door_rules.exposure(door_facts(tmp_path, listen, auth, location_auth), RuleOptions())
    assert findings, "the server proxies to ComfyUI: it is a front door"
    assert ids(findings) == failing, [f.message for f in findings]


def test_a_server_that_does_not_reach_comfyui_is_no_front_door(tmp_path: Path) -> None:
    root = plant_nginx(tmp_path, "server {{ listen 80; location / {{ proxy_pass http://127.0.0.1:9000; }} }}")
    facts = HostFacts(docker=DockerFacts(containers=[container("comfyui", port=8188)]), nginx=collect_nginx(str(root)))
    assert door_rules.exposure(facts, RuleOptions()) == []
    assert door_rules.exposure(HostFacts(), RuleOptions()) == []  # no nginx at all


def test_an_unreadable_configuration_is_a_warning(tmp_path: Path) -> None:
    root = plant_nginx(tmp_path, "server {{ listen 80; location / {{ proxy_pass http://x; }}")
    facts = HostFacts(nginx=collect_nginx(str(root)))
    assert facts.nginx.status is SourceStatus.UNREADABLE and "unexpected end of file" in facts.nginx.error
    (finding,) = door_rules.exposure(facts, RuleOptions())
    assert finding.severity is Severity.WARN


def test_the_reader_follows_nginx_syntax() -> None:
    assert [t for t, _, _ in tokens('a "b c\\"d" \'e;f\' g\\;h; # x {\n{}', "t")] == [
        "a", 'b c"d', "e;f", "g\\;h", ";", "{", "}"]
    (server,) = parse('server { listen "127.0.0.1:1" ssl; }', "t")
    assert server.block is not None and server.block[0].args == ["127.0.0.1:1", "ssl"]
    for bad in ("server {", "}", "a { b; } }", ";", "{ }"):
        with pytest.raises(NginxSyntaxError):
            parse(bad, "t")
    with pytest.raises(NginxSyntaxError):
        parse("a {" * 40 + "}" * 40, "t")


def test_includes_that_loop_stop(tmp_path: Path) -> None:
    root = plant_nginx(tmp_path, "include conf.d/door.conf;")
    facts = collect_nginx(str(root))
    assert facts.status is SourceStatus.UNREADABLE and "nested too deep" in facts.error


# --- what check --json and fleet reports carry -----------------------------------------------------------


def test_check_json_lists_each_instance_with_its_gpu_and_readiness() -> None:
    ready = Verdict(phase=Phase.READY, reason="ready")
    comfyui = ComfyUIFacts(containers=[ComfyUIContainerFacts("a", "comfyui-0", "img", "running", verdict=ready,
                                                             instance="0", gpu=gpu_uuid(0))])
    facts = facts_with([instance(0, gpu_uuid(0), port=8188), instance(1, "1", given_uuid=gpu_uuid(1), port=8189)],
                       comfyui=comfyui)
    report = report_for(facts, RuleOptions())
    listed = report.to_dict()["instances"]
    assert [(i["name"], i["instance"], i["gpus"], i["ready"], i["ports"]) for i in listed] == [
        ("comfyui-0", "0", [{"index": 0, "uuid": gpu_uuid(0)}], True, ["127.0.0.1:8188"]),
        ("comfyui-1", "1", [{"index": 1, "uuid": gpu_uuid(1)}], None, ["127.0.0.1:8189"]),
    ]
    host = HostResult("gpu-01", "10.0.0.1", report=report).to_dict()
    assert host["instances"] == listed
    unreached = HostResult("gpu-02", "10.0.0.2", failure=host_failure("fleet.unreachable", "no route")).to_dict()
    assert unreached["instances"] == []
