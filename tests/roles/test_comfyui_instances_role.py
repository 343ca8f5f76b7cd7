"""comfyui_instances on a planted 4-GPU host: the role run for real against a private dockerd.

The host: a directory holding the CDI spec nvidia-ctk writes for four GPUs (index and UUID names) and
four /dev/nvidiaN character devices owned by GID 4242 (tests/support/planted_gpus.py); the role's GPU
count (`gpuhost-agent gpus --root`) reads it. The Docker host: a private dockerd (its own network
namespace, no bridge: the containers run, their ports are recorded but not bound) with a runtime named
`nvidia` that points at runc, so containers made the BPF-safe way (--runtime nvidia with
NVIDIA_VISIBLE_DEVICES=<uuid>) start without a driver. The image is the replay stand-in; the tests read
what the role asked Docker for (inspect), not whether ComfyUI serves (tests/roles/test_serving_live.py
runs two real instances behind the front door).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import PlaybookRun, local_play, run_playbook
from tests.support.comfyui_replay import IMAGE, build_image
from tests.support.comfyui_replay import INTERFACE_LABELS as IMAGE_INTERFACE_LABELS
from tests.support.dockerd import PrivateDockerd
from tests.support.paths import REPO
from tests.support.planted_gpus import gpu_uuid, plant_gpu_host

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GPU_GID = 4242
BASE_PORT = 8300
NAME = "gpuhost-serving-plant"
# the last commit before comfyui_instances: a host its comfyui role deployed must not change
BEFORE_INSTANCES = "96d25429a23fc00493d1ef129a6a42fee358e192"



@dataclass
class PlantedHost:
    root: Path
    docker: PrivateDockerd
    work: Path

    def variables(self, **more: Any) -> dict[str, Any]:
        return {
            "comfyui_image": IMAGE,
            "comfyui_image_source": "load",
            "comfyui_image_archive": str(self.work / "absent.tar"),  # the image is there: nothing to load
            "comfyui_container_name": NAME,
            "comfyui_host_user": "nobody",
            "comfyui_create_user": False,
            "comfyui_run_as": "user",
            "comfyui_gpu_device": str(self.root / "dev" / "nvidia0"),
            "comfyui_gpu_discovery_root": str(self.root),
            "comfyui_data_dir": str(self.work / "data"),
            "comfyui_host_port": BASE_PORT,
            "comfyui_command": ["play", "startup-cpu", "--listen", "0.0.0.0", "--port", "8188"],
            "comfyui_wait": False,
            "gpuhost_agent_path": str(self.work / "agent" / "gpuhost-agent.pyz"),
            "gpuhost_agent_bin": str(self.work / "agent" / "gpuhost-agent"),
            "gpuhost_agent_python": sys.executable,
            **more,
        }

    def run(self, variables: dict[str, Any], *extra: str, role: str = "comfyui") -> PlaybookRun:
        return run_playbook(self.work, local_play("Deploy ComfyUI", role), "-i", "localhost,",
                            "-e", json.dumps(variables), *extra, env={"DOCKER_HOST": self.docker.host})

    def containers(self) -> dict[str, dict[str, Any]]:
        client = self.docker.client()
        listed = client.get("/containers/json", params={"all": True})
        found = {}
        for summary in listed:
            inspect = client.get(f"/containers/{summary['Id']}/json")
            found[inspect["Name"].lstrip("/")] = inspect
        return found


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[PlantedHost]:
    build_image(shared_dir)
    work = tmp_path_factory.mktemp("serving-plant")
    root = plant_gpu_host(work / "root", 4, gid=GPU_GID)
    with PrivateDockerd("serving", {"runtimes": {"nvidia": {"path": "runc"}}}) as docker:
        loaded = subprocess.run(f"docker save {IMAGE} | docker --host {docker.host} load", shell=True,
                                capture_output=True, text=True, timeout=300, check=False)
        assert loaded.returncode == 0, loaded.stderr
        yield PlantedHost(root, docker, work)


def env_of(inspect: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in inspect["Config"]["Env"])


def binds_of(inspect: dict[str, Any]) -> dict[str, str]:
    """container path -> host path[:ro]"""
    out = {}
    for bind in inspect["HostConfig"]["Binds"]:
        host_path, container_path, *mode = bind.split(":")
        out[container_path] = host_path + (":ro" if mode and "ro" in mode[0].split(",") else "")
    return out


def test_four_gpus_give_four_containers_each_pinned_to_its_own(host: PlantedHost) -> None:
    run = host.run(host.variables())
    assert run.returncode == 0, run.output[-5000:]
    assert "4 ComfyUI instances (4 GPUs from the CDI spec /etc/cdi/nvidia.yaml)" in run.flat, run.output[-3000:]
    containers = host.containers()
    names = [f"{NAME}-{n}" for n in range(4)]
    assert sorted(containers) == names
    data = host.work / "data"
    for number, name in enumerate(names):
        inspect = containers[name]
        assert inspect["State"]["Status"] == "running", inspect["State"]
        # the BPF-safe path: the nvidia runtime with one GPU by UUID, no device requests
        assert inspect["HostConfig"]["Runtime"] == "nvidia"
        assert env_of(inspect)["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid(number)
        assert not inspect["HostConfig"]["DeviceRequests"]
        # the role's labels, beside the image's own interface labels (gpuhost.comfyui.run-as, ...)
        assert {k: v for k, v in inspect["Config"]["Labels"].items() if k.startswith("gpuhost.")} == {
            "gpuhost.comfyui": "1", "gpuhost.comfyui.instance": str(number),
            "gpuhost.comfyui.gpu": gpu_uuid(number), "gpuhost.comfyui.gpu-uuid": gpu_uuid(number),
            **IMAGE_INTERFACE_LABELS}
        assert inspect["HostConfig"]["PortBindings"] == {
            "8188/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(BASE_PORT + number)}]}
        assert str(GPU_GID) in inspect["HostConfig"]["GroupAdd"]
        binds = binds_of(inspect)
        own = data / "instances" / name
        assert binds == {
            "/basedir/user": f"{own}/user", "/basedir/output": f"{own}/output", "/comfy/mnt": f"{own}/run",
            "/basedir/models": f"{data}/models:ro", "/basedir/custom_nodes": f"{data}/custom_nodes",
            "/basedir/input": f"{data}/input",
        }
        for folder in ("user", "output", "run"):
            assert (own / folder).is_dir()
    # no two instances share a writable folder
    writable = [path for inspect in containers.values() for path in binds_of(inspect).values()
                if not path.endswith(":ro") and "/instances/" in path]
    assert len(writable) == len(set(writable)) == 12


def test_a_second_run_changes_nothing(host: PlantedHost) -> None:
    before = {name: c["Id"] for name, c in host.containers().items()}
    run = host.run(host.variables())
    assert run.returncode == 0, run.output[-5000:]
    assert run.recap()["changed"] == 0, run.output[-5000:]
    assert {name: c["Id"] for name, c in host.containers().items()} == before


def test_check_mode_shows_two_removals_and_removes_nothing(host: PlantedHost) -> None:
    before = sorted(host.containers())
    run = host.run(host.variables(comfyui_instances=2), "--check")
    assert run.returncode == 0, run.output[-5000:]
    assert f"changed: [localhost] => (item={NAME}-2)" in run.output
    assert f"changed: [localhost] => (item={NAME}-3)" in run.output
    assert sorted(host.containers()) == before


def test_two_instances_remove_the_other_two_and_keep_theirs(host: PlantedHost) -> None:
    before = {name: c["Id"] for name, c in host.containers().items()}
    run = host.run(host.variables(comfyui_instances=2))
    assert run.returncode == 0, run.output[-5000:]
    after = {name: c["Id"] for name, c in host.containers().items()}
    assert after == {f"{NAME}-0": before[f"{NAME}-0"], f"{NAME}-1": before[f"{NAME}-1"]}
    assert run.recap()["changed"] == 1, run.output[-5000:]  # the one removal task


def test_a_list_pins_the_gpus_it_names_by_index_or_uuid(host: PlantedHost) -> None:
    run = host.run(host.variables(comfyui_instances=[3, gpu_uuid(1)]))
    assert run.returncode == 0, run.output[-5000:]
    containers = host.containers()
    assert sorted(containers) == [f"{NAME}-0", f"{NAME}-1"]
    assert env_of(containers[f"{NAME}-0"])["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid(3)
    assert env_of(containers[f"{NAME}-1"])["NVIDIA_VISIBLE_DEVICES"] == gpu_uuid(1)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (5, "5 instances need 5 GPUs, one each: 4 GPUs found (0, 1, 2, 3; from the CDI spec /etc/cdi/nvidia.yaml)"),
        ([0, 4], "GPU 4 is not on this host: 4 GPUs found"),
        ([1, gpu_uuid(1)], f"GPU {gpu_uuid(1)} is named twice (GPU 1)"),
        ([gpu_uuid(9)], f"GPU {gpu_uuid(9)} is not on this host"),
    ],
    ids=["more-than-gpus", "absent-index", "same-gpu-twice", "absent-uuid"],
)
def test_what_the_host_cannot_honour_is_refused_before_anything_changes(
        host: PlantedHost, instances: Any, message: str) -> None:
    before = {name: c["Id"] for name, c in host.containers().items()}
    run = host.run(host.variables(comfyui_instances=instances))
    assert run.returncode == 2, run.output[-3000:]
    assert message in run.flat, run.output[-3000:]
    assert run.recap()["changed"] == 0
    assert {name: c["Id"] for name, c in host.containers().items()} == before


def test_one_instance_is_the_container_the_role_always_ran(host: PlantedHost) -> None:
    """A host deployed by the role before comfyui_instances existed does not change: one container, its
    name, port and folders, all GPUs; run again with `comfyui_instances: 1` (four GPUs) and with `auto`
    on a one-GPU host, changed=0."""
    old_roles = host.work / "roles-before-instances"
    if not old_roles.exists():
        old_roles.mkdir()
        archive = host.work / "roles.tar"
        subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), BEFORE_INSTANCES, "roles"],
                       check=True, capture_output=True, timeout=120)
        with tarfile.open(archive) as tar:
            tar.extractall(old_roles, filter="data")
    host.run(host.variables(comfyui_instances=1))  # the multi-instance containers go
    subprocess.run(["docker", "--host", host.docker.host, "rm", "-f", NAME], capture_output=True, timeout=120)
    variables = host.variables()
    variables.pop("comfyui_gpu_discovery_root")
    old = host.run(variables, role=str(old_roles / "roles" / "comfyui"))
    assert old.returncode == 0, old.output[-5000:]
    first = host.containers()
    assert sorted(first) == [NAME]
    assert env_of(first[NAME])["NVIDIA_VISIBLE_DEVICES"] == "all"

    again = host.run(host.variables(comfyui_instances=1))
    assert again.returncode == 0, again.output[-5000:]
    assert again.recap()["changed"] == 0, again.output[-5000:]

    one_gpu = plant_gpu_host(host.work / "root-1", 1, gid=GPU_GID)
    auto = host.run(host.variables(comfyui_gpu_discovery_root=str(one_gpu),
                                   comfyui_gpu_device=str(one_gpu / "dev" / "nvidia0")))
    assert auto.returncode == 0, auto.output[-5000:]
    assert auto.recap()["changed"] == 0, auto.output[-5000:]
    assert {name: c["Id"] for name, c in host.containers().items()} == {NAME: first[NAME]["Id"]}
    assert os.path.isdir(host.work / "data" / "user")


def test_site_ymls_comfyui_play_on_the_planted_host_gives_four_instances(host: PlantedHost) -> None:
    """playbooks/comfyui.yml, the play site.yml imports, as written (on the gpu_hosts group; without become:
    this machine runs the tests as root and has no sudo), on the planted four-GPU host."""
    inventory = host.work / "inventory.yml"
    inventory.write_text(json.dumps({"gpu_hosts": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    playbook = (REPO / "playbooks" / "comfyui.yml").read_text()
    variables = host.variables()
    variables.pop("comfyui_gpu_device")  # the default /dev/nvidia0 is absent here: the role would stand aside
    run = run_playbook(host.work, playbook, "-i", str(inventory), "-e", json.dumps(
        {**variables, "ansible_become": False, "comfyui_require_gpu": False}), env={"DOCKER_HOST": host.docker.host})
    assert run.returncode == 0, run.output[-5000:]
    assert "4 ComfyUI instances (4 GPUs from the CDI spec /etc/cdi/nvidia.yaml)" in run.flat
    containers = host.containers()
    assert sorted(containers) == [f"{NAME}-{n}" for n in range(4)]
    assert [env_of(containers[f"{NAME}-{n}"])["NVIDIA_VISIBLE_DEVICES"] for n in range(4)] == [
        gpu_uuid(n) for n in range(4)]
