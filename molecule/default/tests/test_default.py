"""What site.yml leaves on the instances, read inside them (molecule default scenario)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import tomllib

IMAGE = "local/gpuhost-busybox:test"
NVIDIA_RUNTIME = "/usr/bin/nvidia-container-runtime"


def is_trixie(host: Any) -> bool:
    return str(host.backend.get_hostname()).endswith("trixie")


def sh(host: Any, command: str) -> Any:
    return host.run(command)


def ok(host: Any, command: str) -> str:
    result = host.run(command)
    assert result.rc == 0, f"{command}: rc={result.rc} {result.stderr}"
    return str(result.stdout)


@pytest.fixture(scope="module")
def busybox(host: Any) -> str:
    """A tiny image imported inside the instance from Debian's busybox-static (no registry)."""
    if host.run(f"docker image inspect {IMAGE}").rc != 0:
        ok(
            host,
            "set -e; rm -rf /root/busybox-rootfs; mkdir -p /root/busybox-rootfs/bin; "
            "cp $(command -v busybox) /root/busybox-rootfs/bin/busybox; "
            "for applet in sh true; do ln -s busybox /root/busybox-rootfs/bin/$applet; done; "
            f"tar -C /root/busybox-rootfs -c . | docker import - {IMAGE}",
        )
    return IMAGE


@pytest.fixture(scope="module")
def daemon_json(host: Any) -> dict[str, Any]:
    return dict(json.loads(host.file("/etc/docker/daemon.json").content_string))


@pytest.fixture(scope="module")
def docker_info(host: Any) -> dict[str, Any]:
    return dict(json.loads(ok(host, "docker info --format '{{json .}}'")))


@pytest.fixture(scope="module")
def check_report(host: Any) -> dict[str, Any]:
    result = host.run("gpuhost-agent check")
    assert result.rc == 1, result.stdout + result.stderr  # the missing GPU is a failing finding
    return dict(json.loads(result.stdout))


def test_docker_runs_and_starts_at_boot(host: Any) -> None:
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_daemon_json_keeps_the_planted_keys_and_adds_the_roles(host: Any, daemon_json: dict[str, Any]) -> None:
    # planted by prepare.yml before the first converge
    assert daemon_json["features"]["buildkit"] is True
    assert daemon_json["labels"] == ["gpuhost.test=planted"]
    assert daemon_json["log-opts"]["labels"] == "com.example.team"
    # the docker role's defaults and the user's docker_daemon_options
    assert daemon_json["log-driver"] == "json-file"
    assert daemon_json["log-opts"]["max-size"] == "100m"
    assert daemon_json["log-opts"]["max-file"] == "3"
    assert daemon_json["live-restore"] is True
    assert daemon_json["max-concurrent-downloads"] == 10
    assert daemon_json["max-concurrent-uploads"] == 3
    # the toolkit role
    assert daemon_json["runtimes"]["nvidia"] == {"path": NVIDIA_RUNTIME, "args": []}
    runtime = host.file(NVIDIA_RUNTIME)
    assert runtime.is_file and runtime.mode & 0o111
    assert "default-runtime" not in daemon_json
    backups = ok(host, "ls /etc/docker/").split()
    assert any(name.startswith("daemon.json.") and name.endswith("~") for name in backups), backups


def test_cdi_feature_only_where_docker_has_it(
    host: Any, daemon_json: dict[str, Any], docker_info: dict[str, Any]
) -> None:
    if is_trixie(host):
        assert docker_info["ServerVersion"].startswith("26.")
        assert daemon_json["features"]["cdi"] is True
        assert docker_info["CDISpecDirs"] == ["/etc/cdi", "/var/run/cdi"]
    else:
        assert docker_info["ServerVersion"].startswith("20.10.")
        assert "cdi" not in daemon_json["features"]
        assert not docker_info.get("CDISpecDirs")


def test_the_running_daemon_loaded_the_merged_file(docker_info: dict[str, Any]) -> None:
    assert "nvidia" in docker_info["Runtimes"]
    assert docker_info["Runtimes"]["nvidia"]["path"] == NVIDIA_RUNTIME
    assert docker_info["DefaultRuntime"] == "runc"
    assert "gpuhost.test=planted" in docker_info["Labels"]
    assert docker_info["LiveRestoreEnabled"] is True


@pytest.mark.parametrize("visible", [None, "void"])
def test_the_nvidia_runtime_hands_over_to_runc(host: Any, busybox: str, visible: str | None) -> None:
    env = f"-e NVIDIA_VISIBLE_DEVICES={visible} " if visible else ""
    result = host.run(f"docker run --rm --network none --runtime=nvidia {env}{busybox} true")
    assert result.rc == 0, result.stderr


def test_all_gpus_fail_without_a_driver_and_gpuhost_says_why(
    host: Any, busybox: str, check_report: dict[str, Any]
) -> None:
    result = host.run(f"docker run --rm --network none --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all {busybox} true")
    assert result.rc != 0
    # ERROR_LIBRARY_NOT_FOUND without libnvidia-ml (trixie), NVML's "Unknown Error" without the module (bookworm)
    match = re.search(r"failed to initialize NVML: ([^:]+)", result.stderr)
    assert match, result.stderr
    driver = next(f for f in check_report["findings"] if f["id"] == "gpu.driver")
    assert driver["severity"] == "fail"
    assert "containers started with --runtime=nvidia and NVIDIA_VISIBLE_DEVICES=all fail with" in driver["message"]
    assert f"`failed to initialize NVML: {match.group(1)}`" in driver["message"]


def test_no_failing_finding_but_the_missing_gpu(check_report: dict[str, Any]) -> None:
    assert check_report["failing"] == ["gpu.driver"], [
        f for f in check_report["findings"] if f["severity"] == "fail"
    ]
    assert next(f for f in check_report["findings"] if f["id"] == "gpu.driver")["message"].startswith("no GPU")
    ids = {f["id"]: f["severity"] for f in check_report["findings"]}
    assert ids["docker.nvidia-runtime"] == "ok"
    assert ids["toolkit.installed"] == "ok"
    assert ids["toolkit.mode"] == "ok"
    assert ids["docker.cdi"] == "ok"


def test_toolkit_is_the_pinned_version_and_held(host: Any) -> None:
    assert "version 1.20.0" in ok(host, "nvidia-ctk --version")
    selections = ok(host, "dpkg --get-selections nvidia-container-toolkit nvidia-container-toolkit-base")
    assert selections.split() == ["nvidia-container-toolkit", "hold", "nvidia-container-toolkit-base", "hold"]


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_runtime_mode_set_and_other_keys_untouched(host: Any) -> None:
    config = tomllib.loads(host.file("/etc/nvidia-container-runtime/config.toml").content_string)
    assert config["nvidia-container-runtime"]["mode"] == "auto"
    # Debian ships no /sbin/ldconfig.real; rootful Docker needs the cgroup setup
    assert config["nvidia-container-cli"]["ldconfig"] == "@/sbin/ldconfig"
    assert config["nvidia-container-cli"]["no-cgroups"] is False
    if is_trixie(host):
        planted = flatten(tomllib.loads(host.file("/etc/gpuhost-test/planted-config.toml").content_string))
        assert planted.pop("nvidia-container-runtime.mode") == "legacy"
        current = flatten(config)
        assert {key: current.get(key) for key in planted} == planted


def test_one_cdi_writer(host: Any) -> None:
    facts = json.loads(ok(host, "gpuhost-agent facts --area toolkit"))["toolkit"]
    enabled = [unit["name"] for unit in facts["cdi_writer_units"] if unit["enabled"]]
    if is_trixie(host):
        assert enabled == ["nvidia-cdi-refresh.path"]
        path_unit = host.service("nvidia-cdi-refresh.path")
        assert path_unit.is_enabled and path_unit.is_running
        # the planted second writer and its spec are gone
        assert not host.file("/etc/systemd/system/gpuhost-cdi-generate.service").exists
        assert not host.file("/etc/cdi/nvidia.yaml").exists
    else:
        assert enabled == ["gpuhost-cdi-generate.service"]
        assert "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in host.file(
            "/etc/systemd/system/gpuhost-cdi-generate.service"
        ).content_string
        for unit in ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service"):
            assert host.run(f"systemctl is-enabled {unit}").stdout.strip() == "masked"


def test_driver_install_or_skip_path(host: Any) -> None:
    if is_trixie(host):
        # skip path: the recorded 580.159.04 matches branch 580, so nothing was installed or changed
        assert not host.package("libnvidia-ml1").is_installed
        assert not host.file("/etc/apt/sources.list.d/gpuhost-debian-non-free.sources").exists
        assert not host.file("/etc/modprobe.d/gpuhost-blacklist-nouveau.conf").exists
    else:
        for package in ("libnvidia-ml1", "nvidia-smi"):
            assert host.package(package).version.startswith("535.261.03")
            name, selection = ok(host, f"dpkg --get-selections {package}").split()
            assert (name.split(":")[0], selection) == (package, "hold")
        assert "blacklist nouveau" in host.file("/etc/modprobe.d/gpuhost-blacklist-nouveau.conf").content_string
        assert ok(host, "dpkg --get-selections docker.io").split() == ["docker.io", "hold"]


BLACKLIST = "/etc/apt/apt.conf.d/51gpuhost-nvidia-driver"


def test_driver_packages_held_and_kept_out_of_unattended_upgrades(host: Any, check_report: dict[str, Any]) -> None:
    packages = json.loads(ok(host, "gpuhost-agent facts"))["packages"]
    if is_trixie(host):
        # skip path without unattended-upgrades: no driver package to hold, no blacklist to write
        assert packages["driver_packages"] == {}
        assert not host.file(BLACKLIST).exists
        return
    # prepare.yml enabled unattended-upgrades; every driver package (dependencies too) is held
    assert packages["unattended_upgrades_installed"] and packages["unattended_upgrade_periodic"] == "1"
    assert {"libnvidia-ml1", "nvidia-smi"} <= set(packages["driver_packages"])
    assert sorted(packages["held"]) == sorted(packages["driver_packages"])
    blacklist = host.file(BLACKLIST)
    assert blacklist.mode == 0o644
    assert {"nvidia-", "libnvidia-"} <= set(packages["unattended_blacklist"])
    assert "Unattended-Upgrade::Package-Blacklist" in blacklist.content_string
    # apt itself reads the file: the entries are in its merged configuration
    dumped = ok(host, "apt-config dump Unattended-Upgrade::Package-Blacklist")
    assert 'Unattended-Upgrade::Package-Blacklist:: "libnvidia-";' in dumped, dumped
    assert "gpu.upgrade-risk" not in {f["id"] for f in check_report["findings"]}


def role_log() -> str:
    """What the roles printed in this run's prepare, check, converge and idempotence (whitespace folded)."""
    text = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log").read_text(errors="replace")
    return " ".join(text.split())


def said(host: Any, text: str) -> bool:
    name = re.escape(str(host.backend.get_hostname()))
    return re.search(rf"\[{name}\][^\[]{{0,300}}?{re.escape(text)}", role_log()) is not None


def test_the_roles_say_why(host: Any) -> None:
    if is_trixie(host):
        assert said(host, "NVIDIA driver 580.159.04 is loaded")
        assert said(host, "matches branch 580")
        assert not said(host, "predates CDI device requests")
    else:
        assert said(host, "Docker 20.10.24+dfsg1 predates CDI device requests")
        assert said(host, "the NVIDIA kernel module can be neither built nor loaded inside it")
    assert said(host, "Smoke test skipped: no GPU here")


def test_docker_restarts_at_most_once_per_play_and_not_when_nothing_changed() -> None:
    """The shared `Restart docker` handler, as the runs of this scenario logged it."""
    text = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log").read_text(errors="replace")
    runs = [run for run in text.split("PLAY RECAP") if "PLAY [" in run]
    handler = "RUNNING HANDLER [docker_restart : Restart docker]"
    for run in runs:
        for play in run.split("PLAY [")[1:]:
            assert play.count(handler) <= 1, play[:200]
    *_, converge, idempotence = runs  # ... check, converge, idempotence
    assert converge.count(handler) == 2  # the docker play and the toolkit play each changed daemon.json
    assert handler not in idempotence  # nothing changed: no restart
