"""The data-root move plan and the storage probes against real daemons (a private dockerd per test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuhost.engine import EngineClient
from gpuhost.model import UsageError
from gpuhost.storage.move import plan_data_root
from gpuhost.storage.probe import largest_image, measure_unpack, measure_write, probe_storage
from gpuhost.units import MIB
from gpuhost.unpack import predict_unpack_seconds
from tests.support.dockerd import PrivateDockerd
from tests.support.images import import_busybox

pytestmark = pytest.mark.docker


def start_container(client: EngineClient, image: str, name: str) -> None:
    body = {"Image": image, "Cmd": ["sleep", "300"], "HostConfig": {"NetworkMode": "none"}}
    created = client.request("POST", "/containers/create", params={"name": name}, body=body)
    client.request("POST", f"/containers/{created['Id']}/start")


def test_without_docker_daemon_json_decides(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    nowhere = EngineClient("unix:///nonexistent/docker.sock")
    plan = plan_data_root("/mnt/docker/", str(daemon_json), nowhere)
    assert (plan.current, plan.source, plan.docker_running) == ("/var/lib/docker", "default", False)
    assert plan.switch and plan.target == "/mnt/docker"

    old = tmp_path / "old-root"
    (old / "image").mkdir(parents=True)
    daemon_json.write_text(json.dumps({"data-root": str(old), "log-driver": "json-file"}))
    plan = plan_data_root("/mnt/docker", str(daemon_json), nowhere)
    assert (plan.current, plan.source, plan.old_has_data, plan.copy_data) == (str(old), "daemon.json", True, True)
    assert plan_data_root("/mnt/docker", str(daemon_json), nowhere, move=False).copy_data is False

    daemon_json.write_text(json.dumps({"data-root": "/mnt/docker"}))
    settled = plan_data_root("/mnt/docker", str(daemon_json), nowhere)
    assert not settled.switch and not settled.copy_data  # a second run changes nothing


def test_invalid_daemon_json_is_an_error_not_a_guess(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"data-root": ')
    with pytest.raises(UsageError, match="not valid JSON"):
        plan_data_root("/mnt/docker", str(daemon_json))


def test_the_engine_knows_best_and_live_restore_blocks_the_move(tmp_path: Path) -> None:
    with PrivateDockerd("move", {"live-restore": True}) as daemon:
        client = daemon.client()
        plan = plan_data_root("/mnt/docker", str(daemon.config_path), client)
        assert plan.source == "engine" and plan.docker_running and plan.live_restore
        assert plan.current == str(daemon.base / "data")
        assert plan.copy_data and not plan.blocked  # nothing runs: stopping Docker leaves nothing behind
        driver = str(client.get("/info")["Driver"])
        assert plan.storage_driver == driver
        assert plan.keep_storage_driver == ("" if driver in ("overlay2", "overlayfs") else driver)

        image = import_busybox(client, repo="gpuhost-storage-busybox")
        start_container(client, image, "gpuhost-storage-live")
        blocked = plan_data_root("/mnt/docker", str(daemon.config_path), client)
        assert blocked.running_containers == ["gpuhost-storage-live"]
        assert "live-restore" in blocked.blocked and "gpuhost-storage-live" in blocked.blocked
        assert blocked.images == 1
        client.request("DELETE", "/containers/gpuhost-storage-live", params={"force": True})


def test_the_storage_driver_of_the_copied_data_is_kept(tmp_path: Path) -> None:
    """Images copied from a vfs (or btrfs, zfs...) data-root are readable only by that driver; Docker
    would pick overlay2 on the new disk, so the plan keeps the driver unless daemon.json names one."""
    with PrivateDockerd("vfs", {"storage-driver": "vfs"}) as daemon:
        client = daemon.client()
        import_busybox(client, repo="gpuhost-storage-busybox")
        pinned = plan_data_root("/mnt/docker", str(daemon.config_path), client)
        assert (pinned.storage_driver, pinned.copy_data, pinned.keep_storage_driver) == ("vfs", True, "")
        # the driver chosen elsewhere (dockerd's command line, or by Docker itself): daemon.json lacks it
        plain = tmp_path / "daemon.json"
        plain.write_text("{}")
        running = plan_data_root("/mnt/docker", str(plain), client)
        assert (running.source, running.keep_storage_driver) == ("engine", "vfs")
        # Docker out of reach (stopped, or not answering): the data-root it wrote says which driver
        plain.write_text(json.dumps({"data-root": str(daemon.base / "data")}))
        nowhere = EngineClient("unix:///nonexistent/docker.sock")
        stopped = plan_data_root("/mnt/docker", str(plain), nowhere)
        assert (stopped.source, stopped.storage_driver, stopped.keep_storage_driver) == ("daemon.json", "vfs", "vfs")
        assert plan_data_root("/mnt/docker", str(plain), nowhere, move=False).keep_storage_driver == ""  # no copy


def test_write_probe_measures_and_cleans_up(tmp_path: Path) -> None:
    result = measure_write(str(tmp_path), size_bytes=32 * MIB, block_bytes=4 * MIB)
    assert result.bytes_written == 32 * MIB
    assert result.write_mib_s > 0 and result.seconds > 0
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="at least one block"):
        measure_write(str(tmp_path), size_bytes=MIB, block_bytes=4 * MIB)


def test_unpack_probe_loads_and_removes_its_image(tmp_path: Path) -> None:
    with PrivateDockerd("probe") as daemon:
        client = daemon.client()
        result = measure_unpack(client, str(tmp_path), size_bytes=32 * MIB)
        assert result.image_bytes >= 32 * MIB and result.unpack_mib_s > 0
        # a daemon in a network namespace of its own cannot reach the probe's registry on this
        # loopback: it is timed loading an archive instead, and the probe says why
        assert result.method == "load" and "127.0.0.1" in result.pull_error
        assert set(result.per_entry_us) == {"none", "gzip"} and result.files_entries > 600  # 20.10: no zstd
        assert client.get("/images/json") == []  # the probe image is gone again
        assert list(tmp_path.iterdir()) == []

        image = import_busybox(client, repo="gpuhost-storage-busybox")
        found = largest_image(client)
        assert found is not None and found[0] == image and found[1] > 0

        record = tmp_path / "record" / "storage-probe.json"
        report = probe_storage(size_mib=16, unpack=False, client=client, record=str(record))
        assert report.path == str(daemon.base / "data")
        assert report.image_ref == image and report.image_bytes == found[1]
        assert report.write is not None
        assert report.predicted_unpack_s == round(predict_unpack_seconds(found[1], report.write.write_mib_s), 1)
        assert json.loads(record.read_text())["write"]["write_mib_s"] == report.write.write_mib_s

        # until the data is on the device, with the device's share taken back out
        said: list[str] = []
        durable = measure_unpack(client, str(tmp_path), size_bytes=32 * MIB, rounds=1, compressions=("none",),
                                 data_root=str(daemon.base / "data"), write_mib_s=2000.0, progress=said.append)
        assert durable.until_durable and durable.device_write_mib_s == 2000.0
        assert durable.cpu_busy_pct is not None and 0 <= durable.cpu_busy_pct <= 100
        measured = durable.round_rates_mib_s["none"][0]
        assert durable.unpack_mib_s > measured
        assert "docker load, none layers, round 1 of 1" in said and durable.method == "load"
        for bad in (16, 10**9):
            with pytest.raises(UsageError, match="--unpack-mib"):
                probe_storage(size_mib=16, unpack=True, unpack_mib=bad, client=client)
        assert [i["RepoTags"] for i in client.get("/images/json")] == [[image]]  # the probe image is gone


def test_unpack_probe_pulls_from_its_own_registry_on_loopback(tmp_path: Path) -> None:
    """The host's dockerd (this network namespace) pulls the probe's images from 127.0.0.1."""
    client = EngineClient()
    said: list[str] = []
    result = measure_unpack(client, str(tmp_path), size_bytes=32 * MIB, rounds=1, compressions=("none", "gzip"),
                            progress=said.append)
    assert result.method == "pull" and result.pull_error == ""
    assert set(result.rates_mib_s) == {"none", "gzip"} and set(result.per_entry_us) == {"none", "gzip"}
    assert "docker pull, gzip layers, round 1 of 1" in said
    assert not [i for i in client.get("/images/json") if any("gpuhost-storage-probe" in t for t in i["RepoTags"] or [])]
    assert list(tmp_path.iterdir()) == []
