"""The unpack probe's parts that need no Docker: the small-files image, where --record may
write, and what a recorded probe says (read strictly)."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gpuhost.comfyui.layers import LayersOptions, _same_disk
from gpuhost.facts.storage import PathLocation, RecordedProbe, read_recorded_probe
from gpuhost.model import UsageError
from gpuhost.storage.probe import check_record_path, parse_compressions
from gpuhost.storage.probe_images import SMALL_FILES_PER_DIRECTORY, small_files_image, weights_image
from gpuhost.storage.probe_registry import ProbeRegistry, file_blob
from gpuhost.units import MIB


def test_the_small_files_image_is_a_python_environments_shape(tmp_path: Path) -> None:
    image = small_files_image(str(tmp_path), 250)
    assert image.entries == 250 + 3  # the files and their three directories
    [layer] = image.layers
    assert layer.compression == "none" and layer.size == Path(layer.path).stat().st_size
    with tarfile.open(layer.path) as inner:
        members = inner.getmembers()
    files = [m for m in members if m.isfile()]
    assert len(members) == image.entries and len(files) == 250
    assert all(1024 <= m.size <= 16 * 1024 for m in files)
    assert len({m.name.rsplit("/", 1)[0] for m in files}) == -(-250 // SMALL_FILES_PER_DIRECTORY)
    archive = tmp_path / "files.tar"
    image.write_archive(str(archive), "gpuhost-storage-probe:files")
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["gpuhost-storage-probe:files"]
    image.remove()
    assert not list(tmp_path.glob(".gpuhost-probe-*"))


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_weights_layers_are_stored_compressed_and_keep_their_diff_id(tmp_path: Path, compression: str) -> None:
    image = weights_image(str(tmp_path), 4 * MIB, layer_bytes=2 * MIB, compression=compression)
    assert len(image.layers) == 2 and image.unpacked_bytes >= 4 * MIB
    for layer in image.layers:
        data = Path(layer.path).read_bytes()
        data = gzip.decompress(data) if compression == "gzip" else data
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.diff_id
    assert len(list(tmp_path.iterdir())) == 2  # only the stored layers: the uncompressed ones are gone
    image.remove()
    assert not list(tmp_path.iterdir())


def test_the_probe_registry_serves_what_a_pull_reads(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(b"x" * 3000)
    with ProbeRegistry("gpuhost-storage-probe") as registry:
        reference = registry.add_image("t1", [(file_blob(str(layer)), "gzip")], {"rootfs": {"diff_ids": []}})
        assert reference == f"{registry.address}/gpuhost-storage-probe:t1"
        base = f"http://{registry.address}"
        assert urllib.request.urlopen(base + "/v2/").status == 200
        request = urllib.request.Request(base + "/v2/gpuhost-storage-probe/manifests/t1",
                                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(request) as answer:
            body = answer.read()
            digest = answer.headers["Docker-Content-Digest"]
        manifest = json.loads(body)
        assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
        assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        with urllib.request.urlopen(f"{base}/v2/gpuhost-storage-probe/manifests/{digest}") as answer:
            assert answer.read() == body
        blob = manifest["layers"][0]["digest"]
        with urllib.request.urlopen(f"{base}/v2/gpuhost-storage-probe/blobs/{blob}") as answer:
            assert answer.read() == b"x" * 3000
        head = urllib.request.Request(f"{base}/v2/gpuhost-storage-probe/blobs/{blob}", method="HEAD")
        with urllib.request.urlopen(head) as answer:
            assert answer.headers["Content-Length"] == "3000"
        # Docker's TLS handshake first: the answer must start with "HTTP/" for it to fall back
        with socket.create_connection(("127.0.0.1", int(registry.address.rsplit(":", 1)[1])), timeout=5) as tls:
            tls.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)))
            assert tls.recv(5) == b"HTTP/"
        registry.forget("t1")
        for missing in ("/v2/gpuhost-storage-probe/manifests/t1", "/v2/other/manifests/t1",
                        "/v2/gpuhost-storage-probe/blobs/sha256:" + "0" * 64, "/v2/gpuhost-storage-probe/x/y"):
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(base + missing)
            assert failed.value.code == 404


@pytest.mark.parametrize("path", ["relative.json", "/var/lib/../etc/x.json", "/var/lib/gpuhost/", " /tmp/x.json",
                                  "/tmp/x.json ", "/tmp/a\nb.json", "/tmp"])
def test_record_paths_are_checked_before_anything_runs(path: str) -> None:
    with pytest.raises(UsageError):
        check_record_path(path)


def test_a_record_path_is_normalised() -> None:
    assert check_record_path("/var/lib//gpuhost/./probe.json") == "/var/lib/gpuhost/probe.json"


def write_record(root: Path, **fields: object) -> Path:
    record = root / "var/lib/gpuhost/storage-probe.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": "gpuhost.storage-probe/v1", "path": "/mnt/docker", "mountpoint": "/mnt/docker",
            "device": "nvme1n1", "write": {"write_mib_s": 900.0},
            "unpack": {"unpack_mib_s": 150.0, "rates_mib_s": {"none": 150.0, "gzip": 90.0},
                       "per_entry_us": {"none": 120.5, "zstd": 60.0}},
            "image_store": "containerd", "decompressor": {"gzip": "igzip"}}
    data.update(fields)
    record.write_text(json.dumps(data))
    return record


def test_the_recorded_store_decompressor_and_cost_per_file(tmp_path: Path) -> None:
    write_record(tmp_path)
    probe = read_recorded_probe(str(tmp_path))
    assert probe is not None
    assert (probe.per_entry_us, probe.image_store, probe.gzip_decompressor) == (
        {"none": 120.5, "zstd": 60.0}, "containerd", "igzip")


def test_a_single_recorded_cost_per_file_is_the_uncompressed_ones(tmp_path: Path) -> None:
    write_record(tmp_path, unpack={"unpack_mib_s": 150.0, "per_entry_us": 99.5})
    probe = read_recorded_probe(str(tmp_path))
    assert probe is not None and probe.per_entry_us == {"none": 99.5}


@pytest.mark.parametrize("bad", [-1.0, "12", True, None, [1.0]])
def test_a_bad_cost_per_file_is_left_out(tmp_path: Path, bad: object) -> None:
    write_record(tmp_path, unpack={"unpack_mib_s": 150.0, "per_entry_us": {"none": bad, "gzip": 80.0, "lz4": 1.0}})
    probe = read_recorded_probe(str(tmp_path))
    assert probe is not None and probe.per_entry_us == {"gzip": 80.0}


@pytest.mark.parametrize("bad", ["con tainerd", "x" * 65, 7, "igzip\n"])
def test_a_foreign_store_or_program_name_is_left_out(tmp_path: Path, bad: object) -> None:
    write_record(tmp_path, image_store=bad, decompressor={"gzip": bad})
    probe = read_recorded_probe(str(tmp_path))
    assert probe is not None and probe.image_store == "" and probe.gzip_decompressor == ""


def test_a_record_elsewhere_is_read_from_its_own_path(tmp_path: Path) -> None:
    record = write_record(tmp_path)
    moved = tmp_path / "bench/probe.json"
    moved.parent.mkdir()
    record.rename(moved)
    assert read_recorded_probe(str(tmp_path)) is None
    assert read_recorded_probe(str(tmp_path), "/bench/probe.json") is not None
    assert LayersOptions.parse(probe_record=str(moved)).probe_record == str(moved)


@pytest.mark.parametrize("content", ["not json", "[]", json.dumps({"schema": "gpuhost.check/v1"})])
def test_a_probe_record_option_that_is_not_one_is_bad_input(tmp_path: Path, content: str) -> None:
    path = tmp_path / "probe.json"
    path.write_text(content)
    with pytest.raises(UsageError):
        LayersOptions.parse(probe_record=str(path))


@pytest.mark.parametrize("path", ["probe.json", "/nonexistent/probe.json", "/tmp ", "/tmp"])
def test_a_probe_record_option_must_name_a_readable_file(path: str) -> None:
    with pytest.raises(UsageError):
        LayersOptions.parse(probe_record=path)


def test_the_probes_write_rate_counts_only_for_the_disk_it_measured() -> None:
    probe = RecordedProbe(path="/mnt/docker", mountpoint="/mnt/docker", device="nvme1n1", write_mib_s=900.0)
    assert _same_disk(probe, PathLocation("/mnt/docker/containerd", mountpoint="/mnt/docker", device="nvme1n1"))
    assert not _same_disk(probe, PathLocation("/var/lib/containerd", mountpoint="/", device="nvme0n1p1"))
    # the same mount point on another device: the disk was replaced since the probe
    assert not _same_disk(probe, PathLocation("/mnt/docker", mountpoint="/mnt/docker", device="md0"))


@pytest.mark.parametrize(("text", "chosen"), [("none,gzip,zstd", ("none", "gzip", "zstd")), ("gzip", ("gzip",)),
                                              ("zstd,none", ("zstd", "none"))])
def test_the_compressions_to_measure(text: str, chosen: tuple[str, ...]) -> None:
    assert parse_compressions(text) == chosen


@pytest.mark.parametrize("text", ["", "gzip,gzip", "gzip ", "brotli", "gzip,,none", "GZIP"])
def test_bad_compression_lists_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--compressions"):
        parse_compressions(text)
