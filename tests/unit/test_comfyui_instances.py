"""comfyui_instances: the role's plan (roles/comfyui/filter_plugins/instances.py) for every form of the
value against a host's GPUs, and the GPU list it is read against (gpuhost.comfyui.instances) from each
source: NVML facts, a planted CDI spec, planted device nodes."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gpuhost.comfyui.instances import discover_gpus, instances_of, inventory_to_dict, pinned_refs
from gpuhost.facts.cdi import CdiFacts, collect_cdi
from gpuhost.facts.devices import DeviceFacts, collect_devices
from gpuhost.facts.docker import ContainerGpuAccess, gpu_paths_of
from gpuhost.facts.gpu import GpuDevice, GpuFacts
from gpuhost.facts.source import SourceStatus
from tests.support.paths import FIXTURES, REPO
from tests.support.planted_gpus import gpu_uuid, plant_gpu_host

FILTERS = REPO / "roles" / "comfyui" / "filter_plugins" / "instances.py"


def filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location("comfyui_instance_filters", FILTERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAN = filters().plan
VOLUMES = filters().volumes


def inventory(count: int, cdi: bool = True) -> dict[str, Any]:
    gpus = [{"index": n, "uuid": gpu_uuid(n)} for n in range(count)]
    names = [str(n) for n in range(count)] + [gpu_uuid(n) for n in range(count)] + ["all"] if cdi else []
    return {"source": "cdi", "detail": "the CDI spec /etc/cdi/nvidia.yaml", "gpus": gpus, "cdi_names": names}


def settings(**more: Any) -> dict[str, Any]:
    return {"name": "comfyui", "host_port": 8188, "gpu_mode": "runtime", "gpu_devices": "all", "cpu_mode": False,
            **more}


def test_auto_on_four_gpus_is_four_instances_on_their_own_gpu_and_port() -> None:
    plan = PLAN("auto", inventory(4), settings())
    assert plan["valid"] and not plan["single"] and plan["count"] == 4
    for number, instance in enumerate(plan["instances"]):
        assert instance["name"] == f"comfyui-{number}"
        assert instance["host_port"] == 8188 + number
        assert instance["visible_devices"] == gpu_uuid(number)
        assert instance["cdi_devices"] is None and instance["device_ids"] is None
        assert instance["labels"] == {"gpuhost.comfyui": "1", "gpuhost.comfyui.instance": str(number),
                                      "gpuhost.comfyui.gpu": gpu_uuid(number),
                                      "gpuhost.comfyui.gpu-uuid": gpu_uuid(number)}


def test_each_gpu_mode_pins_the_bpf_safe_way() -> None:
    cdi = PLAN(2, inventory(2), settings(gpu_mode="cdi"))["instances"]
    assert [i["cdi_devices"] for i in cdi] == [["nvidia.com/gpu=0"], ["nvidia.com/gpu=1"]]
    assert [i["visible_devices"] for i in cdi] == [None, None]
    gpus = PLAN(2, inventory(2), settings(gpu_mode="gpus"))["instances"]
    assert [i["device_ids"] for i in gpus] == [[gpu_uuid(0)], [gpu_uuid(1)]]
    # without UUIDs (the device nodes were the source), the index
    nodes = {"gpus": [{"index": 0, "uuid": ""}, {"index": 1, "uuid": ""}]}
    assert [i["visible_devices"] for i in PLAN("auto", nodes, settings())["instances"]] == ["0", "1"]


def test_a_cdi_name_no_spec_defines_is_refused() -> None:
    plan = PLAN([gpu_uuid(1)], inventory(2, cdi=False) | {"cdi_names": ["0", "1", "all"]}, settings(gpu_mode="cdi"))
    assert not plan["valid"]
    assert f"nvidia.com/gpu={gpu_uuid(1)}, which no CDI spec on the host defines (it defines 0, 1, all)" in plan["why"]


@pytest.mark.parametrize("spec", ["auto", 1, "1", [0]])
def test_one_instance_keeps_the_containers_name_port_and_gpus(spec: Any) -> None:
    gpus = inventory(1)
    plan = PLAN(spec, gpus, settings(gpu_devices="all"))
    assert plan["valid"] and plan["single"]
    (instance,) = plan["instances"]
    assert instance["name"] == "comfyui" and instance["host_port"] == 8188
    if spec == [0]:  # a list of one names that GPU
        assert instance["visible_devices"] == gpu_uuid(0)
        assert instance["labels"]["gpuhost.comfyui.gpu"] == gpu_uuid(0)
    else:
        assert instance["labels"] == {"gpuhost.comfyui": "1"}
        assert instance["visible_devices"] == "all"
        assert instance["cdi_devices"] == ["nvidia.com/gpu=all"]


def test_auto_without_gpus_is_the_one_instance_and_cpu_mode_runs_any_number() -> None:
    assert PLAN("auto", {"gpus": []}, settings())["single"]
    plan = PLAN(3, {}, settings(cpu_mode=True))
    assert [i["name"] for i in plan["instances"]] == ["comfyui-0", "comfyui-1", "comfyui-2"]
    assert all(i["visible_devices"] is None and i["cdi_devices"] is None for i in plan["instances"])
    assert [i["labels"] for i in plan["instances"]][2] == {"gpuhost.comfyui": "1", "gpuhost.comfyui.instance": "2"}
    assert PLAN("auto", inventory(4), settings(cpu_mode=True))["count"] == 1


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (0, "0 is outside 1 to 64"),
        (-1, "-1 is outside 1 to 64"),
        (65, "65 is outside 1 to 64"),
        (10**30, "is outside 1 to 64"),
        (1.5, "1.5 is not a whole number"),
        (2.0, "2.0 is not a whole number"),
        (math.nan, "nan is not a whole number"),
        (math.inf, "inf is not a whole number"),
        (True, "True is a boolean"),
        (None, "None is a NoneType"),
        ({"count": 2}, "is a dict"),
        (" 2", "' 2' is neither `auto` nor a whole number"),
        ("2 ", "'2 ' is neither `auto` nor a whole number"),
        ("auto ", "'auto ' is neither `auto`"),
        ("AUTO", "'AUTO' is neither `auto`"),
        ("two", "'two' is neither"),
        ("+2", "'+2' is neither"),
        ([], "the list is empty"),
        ([0, -1], "the list entry -1 is negative"),
        ([0, 1.0], "the list entry 1.0 is not a GPU index or UUID"),
        ([0, True], "the list entry True is not a GPU index or UUID"),
        ([" 1"], "the list entry ' 1' is not a GPU index"),
        (["GPU-123"], "the list entry 'GPU-123' is not a GPU index"),
        (["../0"], "the list entry '../0' is not a GPU index"),
        ([0, "0"], "GPU 0 is named twice"),
        ([1, gpu_uuid(1)], f"GPU {gpu_uuid(1)} is named twice (GPU 1)"),
        ([7], "GPU 7 is not on this host: 4 GPUs found (0, 1, 2, 3; from the CDI spec"),
        (5, "5 instances need 5 GPUs, one each: 4 GPUs found"),
        (list(range(65)), "the list has 65 entries, more than 64"),
    ],
    ids=lambda v: ascii(v)[:40],
)
def test_bad_values_are_refused_with_the_reason(spec: Any, why: str) -> None:
    plan = PLAN(spec, inventory(4), settings())
    assert not plan["valid"] and plan["instances"] == []
    assert plan["why"].startswith("comfyui_instances is `auto` (one per GPU), a whole number from 1 to 64")
    assert why in plan["why"], plan["why"]


def test_ports_past_65535_are_refused() -> None:
    plan = PLAN(4, inventory(4), settings(host_port=65533))
    assert not plan["valid"] and "ports 65533 to 65536, past 65535" in plan["why"]


def test_volumes_one_instance_as_always_several_with_their_own_folders() -> None:
    paths = {"models": "/basedir/models", "user": "/basedir/user", "output": "/basedir/output",
             "input": "/basedir/input", "run": ""}
    single = VOLUMES({"name": "comfyui"}, True, "/srv/comfyui", paths, ["user", "output", "run"])
    assert single == ["/srv/comfyui/models:/basedir/models", "/srv/comfyui/user:/basedir/user",
                      "/srv/comfyui/output:/basedir/output", "/srv/comfyui/input:/basedir/input"]
    several = VOLUMES({"name": "comfyui-1"}, False, "/srv/comfyui", paths, ["user", "output", "run"])
    assert several == ["/srv/comfyui/models:/basedir/models:ro", "/srv/comfyui/instances/comfyui-1/user:/basedir/user",
                       "/srv/comfyui/instances/comfyui-1/output:/basedir/output", "/srv/comfyui/input:/basedir/input"]


# --- the GPU list -------------------------------------------------------------------------------------


def test_nvml_comes_first_when_it_answers() -> None:
    gpu = GpuFacts(driver_version="580.95.05", gpus=[GpuDevice(index=0, uuid=gpu_uuid(0), minor_number=3, name="H100"),
                                                      GpuDevice(index=1, uuid=gpu_uuid(1), minor_number=1)])
    found = discover_gpus(gpu, CdiFacts(), DeviceFacts())
    assert found.source == "nvml" and "580.95.05" in found.detail
    assert [(g.index, g.uuid, g.node) for g in found.gpus] == [(0, gpu_uuid(0), "/dev/nvidia3"),
                                                               (1, gpu_uuid(1), "/dev/nvidia1")]
    assert discover_gpus(gpu, CdiFacts(), DeviceFacts(), use_nvml=False).source == "none"


def test_a_planted_cdi_spec_joins_each_index_to_its_uuid(tmp_path: Path) -> None:
    root = plant_gpu_host(tmp_path, 4)
    absent = GpuFacts(status=SourceStatus.ABSENT, error="no NVIDIA driver")
    found = discover_gpus(absent, collect_cdi(str(root)), collect_devices(str(root / "dev")))
    assert found.source == "cdi" and found.detail == "the CDI spec /etc/cdi/nvidia.yaml"
    assert [(g.index, g.uuid, g.node) for g in found.gpus] == [(n, gpu_uuid(n), f"/dev/nvidia{n}") for n in range(4)]
    assert set(found.cdi_names) == {"0", "1", "2", "3", "all", *(gpu_uuid(n) for n in range(4))}
    assert found.find("2") is found.gpus[2] and found.find(gpu_uuid(3).lower()) is found.gpus[3]
    assert found.find("4") is None and found.find("GPU-x") is None


def test_the_recorded_h100_spec_is_one_gpu(tmp_path: Path) -> None:
    (tmp_path / "etc" / "cdi").mkdir(parents=True)
    recorded = FIXTURES / "cdi" / "nvidia-h100-580.159.04.yaml"
    (tmp_path / "etc" / "cdi" / "nvidia.yaml").write_bytes(recorded.read_bytes())
    found = discover_gpus(GpuFacts(status=SourceStatus.ABSENT), collect_cdi(str(tmp_path)), DeviceFacts())
    assert inventory_to_dict(found)["gpus"] == [
        {"index": 0, "uuid": "GPU-60779f43-f7f2-8149-8c59-933b6717452f", "node": "/dev/nvidia0", "name": ""}]


def test_device_nodes_alone_count_the_gpus_without_uuids(tmp_path: Path) -> None:
    root = plant_gpu_host(tmp_path, 3, spec=False)
    (root / "dev" / "nvidia-uvm").write_text("")  # not a GPU node
    (root / "dev" / "nvidia7").write_text("")  # a plain file: not a device
    found = discover_gpus(GpuFacts(status=SourceStatus.ABSENT), collect_cdi(str(root)),
                          collect_devices(str(root / "dev")))
    assert found.source == "device-nodes"
    assert [(g.index, g.uuid, g.node) for g in found.gpus] == [(0, "", "/dev/nvidia0"), (1, "", "/dev/nvidia1"),
                                                               (2, "", "/dev/nvidia2")]


def test_a_broken_spec_falls_back_to_the_nodes_and_nothing_is_none(tmp_path: Path) -> None:
    root = plant_gpu_host(tmp_path, 2, spec=False)
    (root / "etc" / "cdi").mkdir(parents=True)
    (root / "etc" / "cdi" / "nvidia.yaml").write_bytes((FIXTURES / "cdi" / "truncated.yaml").read_bytes())
    found = discover_gpus(GpuFacts(status=SourceStatus.ABSENT), collect_cdi(str(root)),
                          collect_devices(str(root / "dev")))
    assert found.source == "device-nodes" and len(found.gpus) == 2
    empty = discover_gpus(GpuFacts(status=SourceStatus.ABSENT, error="no NVIDIA driver"), CdiFacts(), DeviceFacts())
    assert empty.source == "none" and empty.gpus == [] and "no NVIDIA driver" in empty.detail


# --- what a container is pinned to ----------------------------------------------------------------


def _inspect(env: list[str] | None = None, runtime: str = "", requests: list[dict[str, Any]] | None = None,
             labels: dict[str, str] | None = None, name: str = "c") -> ContainerGpuAccess:
    return gpu_paths_of({"Id": "0123456789abcdef", "Name": f"/{name}",
                         "Config": {"Env": env or [], "Labels": labels or {}, "Image": "img"},
                         "HostConfig": {"Runtime": runtime, "DeviceRequests": requests or []},
                         "State": {"Status": "running"}}, {"nvidia": "/usr/bin/nvidia-container-runtime"})


def test_pinned_refs_read_each_way_docker_holds_a_gpu() -> None:
    assert pinned_refs(_inspect([f"NVIDIA_VISIBLE_DEVICES={gpu_uuid(1)}, 2"], "nvidia")) == [gpu_uuid(1), "2"]
    assert pinned_refs(_inspect(["NVIDIA_VISIBLE_DEVICES=all"], "nvidia")) == ["all"]
    assert pinned_refs(_inspect(["NVIDIA_VISIBLE_DEVICES=3"], "runc")) == []  # no nvidia runtime: no GPU
    cdi = {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0", "vendor.com/x=1"]}
    assert pinned_refs(_inspect(requests=[cdi])) == ["0"]
    every = {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}
    assert pinned_refs(_inspect(requests=[every])) == ["all"]
    one = {"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["gpu"]]}
    assert pinned_refs(_inspect(requests=[one])) == ["1"]


def test_instances_are_the_role_labelled_containers_in_order() -> None:
    listed = instances_of([
        _inspect(name="other"),
        _inspect(["NVIDIA_VISIBLE_DEVICES=1"], "nvidia", labels={"gpuhost.comfyui": "1",
                 "gpuhost.comfyui.instance": "1", "gpuhost.comfyui.gpu": "1"}, name="comfyui-1"),
        _inspect(["NVIDIA_VISIBLE_DEVICES=0"], "nvidia", labels={"gpuhost.comfyui": "1",
                 "gpuhost.comfyui.instance": "0", "gpuhost.comfyui.gpu": "0"}, name="comfyui-0"),
    ])
    assert [(i.name, i.instance, i.given, i.pinned) for i in listed] == [("comfyui-0", "0", "0", ["0"]),
                                                                        ("comfyui-1", "1", "1", ["1"])]
