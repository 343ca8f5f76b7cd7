"""The comfyui role on this machine, changing nothing: check mode, refused variables, and the
extra_model_paths.yaml template read the way ComfyUI reads it. (The converged role is tested by
molecule/comfyui.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.support.ansible import run_playbook
from tests.support.comfyui_replay import IMAGE, build_image
from tests.support.paths import REPO

ROLE = REPO / "roles" / "comfyui"
PLAYBOOK = """---
- name: Deploy ComfyUI
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: comfyui
"""


def playbook(tmp_path: Path, variables: dict[str, Any], *extra: str) -> tuple[int, str]:
    run = run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables), *extra)
    return run.returncode, run.output


def comfyui_extra_paths(config: dict[str, Any]) -> dict[str, list[str]]:
    """What ComfyUI makes of an extra_model_paths.yaml (utils/extra_config.py: base_path joined to
    each non-empty line of each folder value)."""
    found: dict[str, list[str]] = {}
    for section in config.values():
        section = dict(section)
        base = section.pop("base_path", "")
        section.pop("is_default", None)
        for folder, value in section.items():
            for line in str(value).split("\n"):
                if line:
                    found.setdefault(folder, []).append(os.path.join(base, line))
    return found


def test_extra_model_paths_template_is_comfyuis_format() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), trim_blocks=True)
    env.filters["to_json"] = json.dumps
    env.filters["bool"] = bool
    rendered = env.get_template("extra_model_paths.yaml.j2").render(
        ansible_managed="Ansible managed",
        __comfyui_extra_model_paths={
            "shared": {"base_path": "/mnt/models", "is_default": True,
                       "folders": {"checkpoints": "checkpoints", "loras": ["loras", "more/loras"]}},
            "team b": {"base_path": "/mnt/team b: models", "folders": {"vae": ["vae"]}},
        },
    )
    config = yaml.safe_load(rendered)
    assert config["shared"]["is_default"] is True and "is_default" not in config["team b"]
    assert comfyui_extra_paths(config) == {
        "checkpoints": ["/mnt/models/checkpoints"],
        "loras": ["/mnt/models/loras", "/mnt/models/more/loras"],
        "vae": ["/mnt/team b: models/vae"],
    }


@pytest.mark.docker
def test_check_mode_changes_nothing(tmp_path: Path, shared_dir: Path) -> None:
    import docker
    import docker.errors

    build_image(shared_dir)
    name, user, data = "gpuhost-comfyui-checkmode", "gpuhost-comfyui-check", tmp_path / "data"
    rc, output = playbook(
        tmp_path,
        {
            "comfyui_image": IMAGE,
            "comfyui_image_source": "load",
            "comfyui_image_archive": str(tmp_path / "absent.tar"),
            "comfyui_container_name": name,
            "comfyui_host_user": user,
            "comfyui_data_dir": str(data),
            "comfyui_require_gpu": False,
            "comfyui_extra_model_paths": {"shared": {"base_path": "/mnt/models", "folders": {"vae": "vae"}}},
        },
        "--check",
    )
    assert rc == 0, output
    assert re.search(r"Run the ComfyUI container\] \**\nchanged: \[localhost\]", output), output
    assert re.search(r"Wait until ComfyUI really serves\] \**\nskipping: \[localhost\]", output), output
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(name)
    assert not data.exists()
    assert subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 2


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"comfyui_image": "comfyui:latest"}, "pin the image by tag (not :latest) or digest"),
        ({"comfyui_image": "mmartial/comfyui-nvidia-docker"}, "pin the image"),
        ({"comfyui_bind_address": "0.0.0.0"}, "needs comfyui_expose: true"),
        ({"comfyui_bind_address": "::"}, "publishing on :: (not loopback"),
        ({"comfyui_bind_address": "10.0.0.5"}, "needs comfyui_expose: true"),
        ({"comfyui_bind_address": "localhost"}, "'localhost' is not an IP address"),
        ({"comfyui_bind_address": "localhost", "comfyui_expose": True}, "'localhost' is not an IP address"),
        ({"comfyui_bind_address": "127.1"}, "'127.1' is not an IP address"),
        ({"comfyui_bind_address": "[127.0.0.1]"}, "brackets go around an IPv6 address only"),
        ({"comfyui_bind_address": "fe80::1%eth0", "comfyui_expose": True}, "Docker takes no IPv6 zone"),
        ({"comfyui_bind_address": " 127.0.0.1"}, "has spaces or control characters"),
        ({"comfyui_bind_address": "127.0.0.1\n"}, "has spaces or control characters"),
        ({"comfyui_bind_address": ""}, "is not an address"),
        ({"comfyui_gpu_mode": "legacy"}, "value of comfyui_gpu_mode must be one of"),
        ({"comfyui_image_source": "build"}, "build needs comfyui_build_path"),
    ],
)
def test_bad_variables_stop_before_anything_changes(tmp_path: Path, variables: dict[str, Any], message: str) -> None:
    rc, output = playbook(tmp_path, {"comfyui_container_name": "gpuhost-comfyui-refused", **variables})
    assert rc == 2, output
    assert message in output
    assert "changed=0" in output


@pytest.mark.parametrize(
    "variables",
    [
        {"comfyui_bind_address": "::1"},
        {"comfyui_bind_address": "[::1]"},
        {"comfyui_bind_address": "127.0.0.2"},
        {"comfyui_bind_address": "0:0:0:0:0:0:0:1"},
        {"comfyui_bind_address": "0.0.0.0", "comfyui_expose": True},
        {"comfyui_bind_address": "[::]", "comfyui_expose": True},
        {"comfyui_bind_address": "10.0.0.5", "comfyui_expose": True},
    ],
    ids=lambda v: f"{v['comfyui_bind_address']}{' exposed' if v.get('comfyui_expose') else ''}",
)
def test_addresses_docker_publishes_on_pass_the_check(tmp_path: Path, variables: dict[str, Any]) -> None:
    # no GPU device: the role stops right after its checks, before anything is created or pulled
    rc, output = playbook(tmp_path, {"comfyui_container_name": "gpuhost-comfyui-refused",
                                     "comfyui_gpu_device": str(tmp_path / "no-nvidia0"), **variables})
    assert rc == 0, output
    assert re.search(r"Check the address the port is published on\] \**\nok: \[localhost\]", output), output
    assert "changed=0" in output


# --- the published port's address, against what Docker takes -------------------------------------

BIND_PLAY = """---
- name: Publish a port on each address, as the role renders it and as written
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run a container per address
      community.docker.docker_container:
        name: "gpuhost-bind-{{ index }}"
        image: local/debian-systemd:bookworm
        command: sleep 120
        pull: never
        state: started
        container_default_behavior: no_defaults
        published_ports: ["{{ item.port }}"]
      loop: "{{ ports }}"
      loop_control:
        index_var: index
      register: runs
      ignore_errors: true
    - name: Record what happened
      ansible.builtin.copy:
        content: "{{ runs.results | map(attribute='failed', default=false) | list | to_json }}"
        dest: "{{ record }}"
        mode: "0600"
"""
BIND_ADDRESSES = ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "0.0.0.0",
                  "[::]", "localhost", "127.1", "[127.0.0.1]", "fe80::1%lo", "[fe80::1%lo]", "::1 "]


def read_bind_address(value: str) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bind_address", ROLE / "filter_plugins" / "bind_address.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.read_bind_address(value))


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def published_on(ports: dict[str, Any]) -> set[str]:
    """The addresses Docker really published 80/tcp on (an IPv4-mapped address as its IPv4)."""
    import ipaddress

    found = set()
    for binding in ports.get("80/tcp") or []:
        ip = ipaddress.ip_address(binding["HostIp"])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        found.add(str(mapped or ip))
    return found


@pytest.mark.docker
def test_the_roles_address_check_agrees_with_docker(tmp_path: Path) -> None:
    """Every address the role takes, Docker publishes on, on that address alone, through
    community.docker as the role renders it; every address the role refuses, community.docker
    refuses too (after the pull), or Docker publishes on every address instead (measured with
    `[fe80::1%lo]` on Docker 20.10)."""
    import docker

    readings = {address: read_bind_address(address) for address in BIND_ADDRESSES}
    assert {a for a, r in readings.items() if r["valid"]} == {
        "127.0.0.1", "127.0.0.2", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "0.0.0.0", "[::]"}
    assert {a for a, r in readings.items() if r["loopback"]} == {
        "127.0.0.1", "127.0.0.2", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"}
    # the role's rendering of each valid address, then each refused address as written
    ports = [{"address": a, "rendered": True, "port": f"{r['published']}:{free_port()}:80"}
             for a, r in readings.items() if r["valid"]]
    ports += [{"address": a, "rendered": False, "port": f"{a}:{free_port()}:80"}
              for a, r in readings.items() if not r["valid"]]
    record = tmp_path / "runs.json"
    client = docker.from_env()
    published: dict[int, set[str]] = {}
    try:
        run = run_playbook(tmp_path, BIND_PLAY, "-i", "localhost,", "-e",
                           json.dumps({"ports": ports, "record": str(record)}))
        assert run.returncode == 0, run.output
        failed = json.loads(record.read_text())
        for index, did_fail in enumerate(failed):
            if not did_fail:
                published[index] = published_on(client.containers.get(f"gpuhost-bind-{index}").attrs[
                    "NetworkSettings"]["Ports"])
    finally:
        for index in range(len(ports)):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(f"gpuhost-bind-{index}").remove(force=True)
    everywhere = {"0.0.0.0", "::"}
    for index, entry in enumerate(ports):
        reading = readings[entry["address"]]
        if entry["rendered"]:
            assert index in published, f"community.docker refused {entry['address']!r} as the role renders it"
            assert published[index] == published_on({"80/tcp": [{"HostIp": reading["ip"]}]}) or (
                reading["ip"] == "0.0.0.0" and published[index] <= everywhere), (entry, published[index])
        else:
            assert index not in published or published[index] == everywhere, (
                f"Docker published {entry['address']!r} on {published.get(index)}, which the role refuses")
