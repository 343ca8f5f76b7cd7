"""The containerd image store on a real Debian 13 host: Docker 26 and containerd 1.7 in a systemd
container (tests/support/containerd_store.py), its store on an XFS loop disk. The unpack probe
measures on containerd's root with the decompressor containerd has; `gpuhost layers` counts the
files from containerd's blobs and predicts with that probe; the storage plan counts the image
twice; `gpuhost check` judges the store's disk against the largest image. A few minutes (the image
is built once and kept: gpuhost-test-store-containerd:trixie)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuhost.engine import EngineClient
from tests.support import containerd_store as cstore
from tests.support.images import busybox_rootfs_tar
from tests.support.paths import REPO
from tests.support.registry import LocalRegistry, registry_available, skopeo_available

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, containers)"),
    pytest.mark.skipif(not (registry_available() and skopeo_available()),
                       reason="apt-get install docker-registry skopeo"),
]

SMALL_FILES = 1500
RECORD = "/var/lib/gpuhost/storage-probe.json"


def sh(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout.strip()


@pytest.fixture(scope="module")
def store_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3 GiB XFS loop disk (sparse) mounted on the host."""
    base = tmp_path_factory.mktemp("containerd-store")
    backing = base / "disk.img"
    with open(backing, "wb") as fh:
        fh.truncate(3 * 1024**3)
    device = sh("losetup", "--find", "--show", str(backing))
    mount = base / "mnt"
    mount.mkdir()
    try:
        sh("mkfs.xfs", "-q", device)
        sh("mount", device, str(mount))
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-R", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture(scope="module")
def instance(store_disk: Path) -> Iterator[cstore.Instance]:
    chosen = cstore.flavour("containerd", "gpuhost-test-store")
    cstore.build_image(chosen, lambda message: sys.stderr.write(message + "\n"))
    started = cstore.Instance(chosen, f"gpuhost-test-store-{os.getpid()}", store_disk / "store", REPO)
    try:
        started.start()
        started.restart_daemons({})
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def registry(instance: cstore.Instance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A registry on the instance's own loopback (Docker pulls from 127.0.0.1 without TLS)."""
    with LocalRegistry(base=tmp_path_factory.mktemp("registry"), netns_pid=instance.pid) as started:
        yield started


def gpuhost_json(instance: cstore.Instance, *args: str) -> dict[str, Any]:
    done = subprocess.run(["docker", "exec", "-e", f"PYTHONPATH={cstore.SOURCE_DIR}", instance.name, "python3", "-m",
                           "gpuhost", *args, "--json"], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    payload: dict[str, Any] = json.loads(done.stdout)
    return payload


def site_packages_image(path: Path, files: int) -> int:
    """A `docker save` archive: the busybox rootfs and a layer of `files` small files; returns the
    image's tar entries."""
    import hashlib

    rootfs = busybox_rootfs_tar()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index in range(files):
            if index % 100 == 0:
                directory = tarfile.TarInfo(f"site-packages/pkg{index // 100:03d}")
                directory.type = tarfile.DIRTYPE
                tar.addfile(directory)
            data = (f"# module {index}\n" * 200).encode()
            info = tarfile.TarInfo(f"site-packages/pkg{index // 100:03d}/mod{index}.py")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    files_layer = buffer.getvalue()
    layers = [rootfs, files_layer]
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": "busybox"}, {"created_by": "RUN pip install"}]}).encode()
    with tarfile.open(path, "w") as archive:
        for name, data in [(f"layer{i}/layer.tar", layer) for i, layer in enumerate(layers)] + [
            ("config.json", config),
            ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["site:packages"],
                                           "Layers": ["layer0/layer.tar", "layer1/layer.tar"]}]).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    entries = 0
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            entries += len(tar.getmembers())
    return entries


def test_the_probe_measures_containerds_root_with_containerds_decompressor(instance: cstore.Instance) -> None:
    report = gpuhost_json(instance, "storage", "probe", "--unpack", "--unpack-mib", "64", "--size-mib", "64",
                          "--record", RECORD)
    assert report["image_store"] == "containerd"
    assert report["store_root"] == report["path"] == "/var/lib/containerd"
    assert report["device"].startswith("loop") and report["fstype"] == "xfs"
    decompressor = report["decompressor"]
    # Debian 13's containerd 1.7 looks for unpigz only; igzip (isal) is installed and never used
    assert decompressor["process"] == "containerd" and decompressor["version"].startswith("1.7")
    assert decompressor["looks_for"] == ["unpigz"] and decompressor["gzip"] == "unpigz"
    assert "environment of containerd" in decompressor["basis"]
    unpack = report["unpack"]
    # Docker 26 extracts zstd layers (20.10 refused them)
    assert set(unpack["rates_mib_s"]) == {"none", "gzip", "zstd"} and unpack["unsupported"] == {}
    assert unpack["until_durable"] is True and unpack["method"] == "pull" and unpack["pull_error"] == ""
    assert unpack["files_entries"] > 1000
    assert {k: len(v) for k, v in unpack["files_round_seconds"].items()} == {"none": 3, "gzip": 3, "zstd": 3}
    assert set(unpack["per_entry_us"]) == {"none", "gzip", "zstd"}
    assert json.loads(instance.exec("cat", RECORD))["image_store"] == "containerd"


def test_layers_counts_the_files_from_containerds_blobs_and_predicts_with_the_probe(
    instance: cstore.Instance, registry: LocalRegistry, tmp_path: Path
) -> None:
    if "storage-probe.json" not in instance.exec("ls", "/var/lib/gpuhost", check=False):
        pytest.skip("the probe test records the probe this test predicts with")
    archive = tmp_path / "image.tar"
    entries = site_packages_image(archive, SMALL_FILES)
    reference = registry.skopeo_copy(f"docker-archive:{archive}", "site", "packages")
    sh("docker", "-H", instance.host, "pull", "-q", reference)
    report = gpuhost_json(instance, "layers", reference)
    unpack, pull = report["unpack"], report["pull"]
    assert unpack["image_store"] == "containerd" and unpack["store_root"] == "/var/lib/containerd"
    assert unpack["write_source"].startswith("recorded storage probe of /var/lib/containerd")
    assert pull["decompressor"]["gzip"] == "unpigz"
    assert [layer["compression"] for layer in pull["registry_layers"]] == ["gzip", "gzip"]
    counted = pull["entries"]
    assert counted["total"] == entries and counted["error"] == ""
    assert "content store" in counted["source"]
    predicted = pull["predicted"]
    assert predicted["entries"] == entries and predicted["files_s"] > 0
    assert predicted["total_s"] == pytest.approx(
        predicted["download_s"] + predicted["decompress_s"] + predicted["files_s"] + predicted["write_s"], abs=0.2)
    # the containerd store keeps the compressed blobs beside the unpacked layers
    assert report["total_bytes"] > 0


def test_the_plan_counts_the_image_twice_on_the_containerd_store(
    instance: cstore.Instance, tmp_path: Path
) -> None:
    backing = tmp_path / "blank.img"
    with open(backing, "wb") as fh:
        fh.truncate(1024**3)
    device = sh("losetup", "--find", "--show", str(backing))

    def plan(*extra: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "gpuhost", "storage", "plan", "--device", device, "--docker-host", instance.host,
             "--daemon-json", str(tmp_path / "absent.json"), "--config", str(tmp_path / "absent"), *extra, "--json"],
            capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
        assert done.stdout, done.stderr[-2000:]
        return done.returncode, json.loads(done.stdout)

    try:
        code, twice = plan("--image-size", "600MiB")
        space = twice["space"]
        assert space["store"] == "containerd" and "driver-type" in space["store_source"]
        assert space["copies"] == 2 and space["needed_bytes"] == 1200 * 1024**2
        assert not space["ok"] and code == 1 and not twice["ok"]
        code, once = plan("--image-size", "600MiB", "--image-store", "classic")
        assert once["space"]["ok"] and once["ok"] and code == 0
        # without a size: the largest image the containerd store holds
        images = EngineClient(instance.host).get("/images/json")
        if images:
            _, largest = plan()
            assert largest["space"]["image_source"].startswith("the largest local image")
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_check_judges_the_store_disk_against_the_largest_image(instance: cstore.Instance) -> None:
    # the agent, as the roles and fleet checks run it on a host (standard library only)
    agent = "import sys; from gpuhost.agent import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(["docker", "exec", "-e", f"PYTHONPATH={cstore.SOURCE_DIR}", instance.name, "python3", "-c",
                           agent, "check"], capture_output=True, text=True, timeout=300, check=False)
    assert done.stdout, done.stderr[-2000:]
    report = json.loads(done.stdout)
    findings = {f["id"]: f for f in report["findings"]}
    if not EngineClient(instance.host).get("/images/json"):
        assert "storage.containerd-double-copy" not in findings
        return
    finding = findings["storage.containerd-double-copy"]
    # a 3 GiB disk holds the small test images twice
    assert finding["severity"] == "ok"
    assert finding["evidence"]["containerd_root"] == "/var/lib/containerd"
    assert finding["evidence"]["filesystem_bytes"] > 2 * 1024**3


def test_the_store_keeps_the_blobs_beside_the_layers(instance: cstore.Instance, store_disk: Path) -> None:
    content = store_disk / "store" / "containerd" / "io.containerd.content.v1.content" / "blobs" / "sha256"
    snapshots = store_disk / "store" / "containerd" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    deadline = time.monotonic() + 5
    while not any(content.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(content.iterdir()) and any(snapshots.iterdir())
    assert shutil.disk_usage(store_disk).used > 0
