"""The docker_storage role after converge, then a simulated EC2 stop/start (tests run in file order)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

STATE = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "loop-devices.json"
LOOPS: dict[str, str] = json.loads(STATE.read_text()) if STATE.exists() else {}
MOUNT = "/mnt/docker"
IMAGE = "gpuhost-storage/busybox:test"


def blkid(host: Any, device: str) -> dict[str, str]:
    out = host.run(f"blkid --probe --output export {device}")
    assert out.rc in (0, 2), out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def old_storage_driver(host: Any) -> str:
    """The storage driver of the old data-root's images: its one directory under image/."""
    drivers = host.check_output("ls /var/lib/docker/image").split()
    assert len(drivers) == 1, drivers
    return str(drivers[0])


def wait_for_boot(host: Any, attempts: int = 60) -> str:
    """systemd's state once it has booted; right after a restart its bus is not up yet."""
    state = ""
    for _ in range(attempts):
        state = host.run("systemctl is-system-running --wait").stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    return state


def test_scenario_state_recorded() -> None:
    assert LOOPS, f"{STATE} is missing: create.yml records the loop devices"


def test_refused_disk_is_byte_for_byte_intact(host: Any) -> None:
    digest = host.check_output(f"sha256sum {LOOPS['data']}").split()[0]
    assert digest == LOOPS["data_sha256"]


def test_fast_disk_has_the_roles_xfs(host: Any) -> None:
    values = blkid(host, LOOPS["fast"])
    assert (values.get("TYPE"), values.get("LABEL")) == ("xfs", "gh-docker")


def test_mounted_with_noatime(host: Any) -> None:
    mount = host.mount_point(MOUNT)
    assert mount.exists
    assert mount.filesystem == "xfs"
    assert mount.device == LOOPS["fast"]
    assert "noatime" in mount.options


def test_units_enabled_and_required_by_docker(host: Any) -> None:
    for unit in ("gpuhost-docker-storage.service", "mnt-docker.mount"):
        service = host.service(unit)
        assert service.is_running or host.run(f"systemctl is-active {unit}").stdout.strip() == "active"
        assert host.file(f"/etc/systemd/system/docker.service.requires/{unit}").is_symlink
    requires = host.check_output("systemctl show --property=Requires --property=After docker.service")
    assert "gpuhost-docker-storage.service" in requires and "mnt-docker.mount" in requires


def test_daemon_json_points_at_the_disk_and_keeps_other_keys(host: Any) -> None:
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["data-root"] == MOUNT
    assert config["log-driver"] == "json-file"
    # Docker 20.10 used the classic store, so docker_storage_image_store: auto pinned it
    assert config["features"]["containerd-snapshotter"] is False
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["DockerRootDir"] == MOUNT
    # the driver that wrote the copied images: overlay2, Docker's own choice on XFS, is not written down;
    # another (vfs, where the instance's Docker runs on a host's vfs) is kept in daemon.json
    before = old_storage_driver(host)
    assert info["Driver"] == before
    assert config.get("storage-driver") == (None if before == "overlay2" else before)


def test_image_and_volume_from_before_the_move_still_work(host: Any) -> None:
    out = host.check_output(
        f"docker run --rm --network none -v gpuhost-storage-vol:/data {IMAGE} cat /data/note.txt"
    )
    assert out == "kept across the move"
    assert "gpuhost-storage-writer" in host.check_output("docker ps -a --format '{{.Names}}'")


def test_old_data_root_is_kept(host: Any) -> None:
    assert host.file(f"/var/lib/docker/image/{old_storage_driver(host)}/repositories.json").exists
    assert host.file("/var/lib/docker/volumes/gpuhost-storage-vol/_data/note.txt").exists


def test_gpuhost_check_reports_the_boot_unit_and_its_policy(host: Any) -> None:
    out = host.run("gpuhost-agent check --min-free-gb 0.1")
    report = json.loads(out.stdout)
    findings = {f["id"]: f for f in report["findings"] if f["area"] == "storage"}
    boot = findings["storage.boot-unit"]
    assert boot["severity"] == "ok", boot
    assert "if it is missing at boot: fail after 90 s" in boot["message"]
    assert boot["evidence"]["mountpoint"] == MOUNT
    devices = {d["name"]: d for d in report["facts"]["storage"]["block_devices"]}
    fast = devices[os.path.basename(LOOPS["fast"])]
    assert fast["fstype"] == "xfs" and fast["mountpoints"] == [MOUNT]
    assert report["facts"]["storage"]["probe"]["write_mib_s"] > 0


def test_a_boot_with_the_disk_present_changes_nothing(host: Any) -> None:
    before = blkid(host, LOOPS["fast"])["UUID"]
    unit = host.check_output("systemctl show --property=ExecStart gpuhost-docker-storage.service")
    assert "storage-ensure --boot --config /etc/gpuhost/docker-storage.json" in unit
    ensure = "gpuhost-agent storage-ensure --boot --config /etc/gpuhost/docker-storage.json"
    result = json.loads(host.check_output(ensure))
    assert result["state"] == "present" and result["changed"] is False and result["actions"] == []
    assert blkid(host, LOOPS["fast"])["UUID"] == before


def test_stop_start_recreates_the_disk_and_docker_comes_back_empty(host: Any) -> None:
    """An EC2 stop/start hands back a blank instance-store disk: wipe it, boot the instance again, and
    the boot unit rebuilds the filesystem before Docker starts."""
    old_uuid = blkid(host, LOOPS["fast"])["UUID"]
    host.check_output("systemctl stop docker.socket docker.service mnt-docker.mount")
    host.check_output(f"wipefs --all {LOOPS['fast']}")
    assert host.run(f"blkid --probe {LOOPS['fast']}").rc == 2
    subprocess.run(["docker", "restart", "--time", "20", host.backend.get_hostname()], check=True, timeout=120)
    assert wait_for_boot(host) == "running", host.run("systemctl --failed --no-pager").stdout
    values = blkid(host, LOOPS["fast"])
    assert (values["TYPE"], values["LABEL"]) == ("xfs", "gh-docker")
    assert values["UUID"] != old_uuid
    mount = host.mount_point(MOUNT)
    assert mount.exists and mount.device == LOOPS["fast"] and "noatime" in mount.options
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["DockerRootDir"] == MOUNT
    assert info["Images"] == 0  # ephemeral: the data-root starts empty
    journal = host.check_output("journalctl --boot -u gpuhost-docker-storage.service --no-pager -o cat")
    assert f"mkfs.xfs -L gh-docker {LOOPS['fast']}" in journal
    order = host.check_output("systemctl show --property=ActiveEnterTimestampMonotonic "
                              "gpuhost-docker-storage.service mnt-docker.mount docker.service")
    stamps = [int(line.split("=")[1]) for line in order.splitlines() if "=" in line]
    assert stamps == sorted(stamps) and stamps[0] > 0  # boot unit, then the mount, then Docker
    assert host.check_output(f"sha256sum {LOOPS['data']}").split()[0] == LOOPS["data_sha256"]


@pytest.mark.parametrize("unit", ["gpuhost-docker-storage.service", "mnt-docker.mount"])
def test_units_still_active_after_the_rebuild(host: Any, unit: str) -> None:
    assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active"
