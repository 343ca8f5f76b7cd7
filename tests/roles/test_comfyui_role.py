"""The comfyui role on this machine, changing nothing: check mode, refused variables, and the
extra_model_paths.yaml template read the way ComfyUI reads it, and a re-run long after the start on
this machine's dockerd. (The converged role is tested by molecule/comfyui.)"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible import local_play, run_playbook
from tests.support.comfyui_replay import IMAGE, NAME_PREFIX, build_image, free_port, remove
from tests.support.paths import REPO
from tests.support.role_templates import comfyui_extra_paths, render

ROLE = REPO / "roles" / "comfyui"
PLAYBOOK = local_play("Deploy ComfyUI", "comfyui")


def playbook(tmp_path: Path, variables: dict[str, Any], *extra: str) -> tuple[int, str]:
    run = run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables), *extra)
    return run.returncode, run.output


def test_extra_model_paths_template_is_comfyuis_format() -> None:
    rendered = render(
        ROLE / "templates" / "extra_model_paths.yaml.j2",
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
        ({"comfyui_instances": 0}, "comfyui_instances is `auto` (one per GPU), a whole number from 1 to 64"),
        ({"comfyui_instances": " 2"}, "' 2' is neither `auto` nor a whole number"),
        ({"comfyui_instances": [0, "0"]}, "names a GPU twice"),
        ({"comfyui_instances": ["GPU-1; rm -rf /"]}, "is not a GPU index (0, 1, ...) or UUID"),
        ({"comfyui_image_source": "build"}, "build needs comfyui_build_path"),
        ({"comfyui_extra_model_paths": {"s": {"base_path": "/m\nother: {base_path: /etc}", "folders": {}}}},
         "comfyui_extra_model_paths maps section names"),
        ({"comfyui_extra_model_paths": {"s": {"base_path": "/m", "folders": {"vae": ["a", "b\nc"]}}}},
         "comfyui_extra_model_paths maps section names"),
        ({"comfyui_extra_model_paths": {"s\n[x]": {"base_path": "/m", "folders": {}}}},
         "comfyui_extra_model_paths maps section names"),
        ({"comfyui_extra_model_paths": {"s": {"base_path": "/m", "folders": {"base_path": "/etc"}}}},
         "comfyui_extra_model_paths maps section names"),
        ({"comfyui_extra_model_paths": {"s": "/m"}}, "comfyui_extra_model_paths maps section names"),
        ({"comfyui_extra_model_paths": {"s": {"folders": {"vae": "vae"}}}}, "comfyui_extra_model_paths maps section"),
        ({"comfyui_extra_model_paths": {"s": {"base_path": "/m", "folders": {"vae": {"x": 1}}}}},
         "comfyui_extra_model_paths maps section names"),
        ({"comfyui_models_source": "s3://b/p", "comfyui_models_manifest": {"models": []},
          "comfyui_models_sync_args": ["--concurrency", "4\nExecStartPost=/bin/true"]}, "no control characters"),
        ({"comfyui_models_source": "s3://b/p\x01", "comfyui_models_manifest": {"models": []}}, "no control characters"),
        ({"comfyui_models_source": "s3://b/p", "comfyui_models_manifest": {"models": []},
          "comfyui_models_dir": "/mnt/models\n"}, "without `..`, spaces or `%`"),
    ],
    ids=lambda v: ascii(v)[:60],
)
def test_bad_variables_stop_before_anything_changes(tmp_path: Path, variables: dict[str, Any], message: str) -> None:
    rc, output = playbook(tmp_path, {"comfyui_container_name": "gpuhost-comfyui-refused", **variables})
    assert rc == 2, output
    assert message in " ".join(output.split())
    assert "changed=0" in output


@pytest.mark.parametrize(
    "variables",
    [
        {"comfyui_models_source": "https://models:s3cr3t-pw@models.example/comfyui"},
        {"comfyui_models_source": "https://s3cr3t-pw@models.example/comfyui"},
        {"comfyui_models_source": "https://:s3cr3t-pw@models.example/comfyui"},
        {"comfyui_models_source": "s3://bucket/prefix", "comfyui_models_endpoint_url": "http://key:s3cr3t-pw@127.0.0.1:9"},
    ],
    ids=["user-password", "token", "password-only", "endpoint"],
)
def test_credentials_in_a_models_url_are_refused_unshown(tmp_path: Path, variables: dict[str, Any]) -> None:
    """The boot unit's command line holds the models URLs and every local user can read it
    (systemctl show): a URL with a user or password is refused, and the refusal does not repeat it."""
    rc, output = playbook(tmp_path, {"comfyui_container_name": "gpuhost-comfyui-refused",
                                     "comfyui_models_manifest": {"models": []}, **variables})
    assert rc == 2, output
    assert "take no user or password" in " ".join(output.split())
    assert "s3cr3t-pw" not in output
    assert "changed=0" in output


@pytest.mark.docker
def test_rerun_long_after_the_start_is_ready_and_changes_nothing(tmp_path: Path, shared_dir: Path) -> None:
    """The role waits on every run: run it again after ComfyUI has served for longer than the stall
    timeout, on this machine's dockerd, with the replay image (its GUI line 3 s after the start).
    Nothing outside tmp_path changes: no user is created (nobody exists), the agent goes to tmp_path."""
    import docker

    build_image(shared_dir)
    name, data = f"{NAME_PREFIX}role-rerun", tmp_path / "data"
    client = docker.from_env()
    remove(client, name)
    variables = {
        "comfyui_image": IMAGE,
        "comfyui_image_source": "load",
        "comfyui_image_archive": str(tmp_path / "absent.tar"),  # the image is there: nothing to load
        "comfyui_container_name": name,
        "comfyui_host_user": "nobody",
        "comfyui_create_user": False,
        "comfyui_run_as": "user",
        "comfyui_data_dir": str(data),
        "comfyui_require_gpu": False,
        "comfyui_cpu_mode": True,
        "comfyui_host_port": free_port(),
        "comfyui_command": ["play", "startup-cpu", "--listen", "0.0.0.0", "--port", "8188", "--speed", "4"],
        "comfyui_wait_timeout": "1m",
        "comfyui_wait_stall_timeout": "3s",
        "gpuhost_agent_path": str(tmp_path / "agent" / "gpuhost-agent.pyz"),
        "gpuhost_agent_bin": str(tmp_path / "agent" / "gpuhost-agent"),
        "gpuhost_agent_build_path": str(tmp_path / "build" / "gpuhost-agent.pyz"),
    }
    try:
        first = run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables))
        assert first.returncode == 0, first.output
        assert f"ComfyUI in {name} is ready after" in first.flat
        time.sleep(5.0)  # its last line (the GUI line) is now older than the 3 s stall timeout
        again = run_playbook(tmp_path, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(variables))
        assert again.returncode == 0, again.output
        assert f"ComfyUI in {name} is ready after" in again.flat
        assert again.recap()["changed"] == 0, again.output
        assert client.containers.get(name).attrs["RestartCount"] == 0
    finally:
        remove(client, name)


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
