"""Counting a layer's files: overlay2's directories for the classic store, the content store's
blobs (uncompressed, gzip, zstd) for the containerd store, laid out as containerd lays them out."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gpuhost.comfyui.entries import count_directory_entries, count_image_entries, entries_for

CONTAINERD_INFO = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
CLASSIC_INFO = {"Driver": "overlay2", "DriverStatus": []}
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


def layer_tar(files: int, long_names: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("site-packages")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for index in range(files):
            name = f"site-packages/{'x' * 150 if long_names else ''}mod{index}.py"
            info = tarfile.TarInfo(name)
            data = f"# module {index}\n".encode() * 50
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("site-packages/latest.py")
        link.type, link.linkname = tarfile.SYMTYPE, "mod0.py"
        tar.addfile(link)
    return buffer.getvalue()


def put_blob(content: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (content / digest).write_bytes(data)
    return "sha256:" + digest


def content_store(tmp_path: Path) -> Path:
    content = tmp_path / "var/lib/containerd/io.containerd.content.v1.content/blobs/sha256"
    content.mkdir(parents=True)
    return content


def test_overlay2_directories_base_first(tmp_path: Path) -> None:
    base, top = tmp_path / "var/lib/docker/overlay2/a/diff", tmp_path / "var/lib/docker/overlay2/b/diff"
    (base / "usr/lib").mkdir(parents=True)
    (base / "usr/lib/libc.so").write_bytes(b"x")
    (top / "opt").mkdir(parents=True)
    for index in range(5):
        (top / "opt" / f"f{index}").write_bytes(b"")
    (top / "opt" / "link").symlink_to("f0")
    inspect = {"GraphDriver": {"Name": "overlay2", "Data": {
        "LowerDir": "/var/lib/docker/overlay2/a/diff", "UpperDir": "/var/lib/docker/overlay2/b/diff"}}}
    counted = count_image_entries(inspect, CLASSIC_INFO, str(tmp_path))
    assert counted.per_layer == [3, 7] and counted.total == 10
    assert "overlay2" in counted.source and counted.error == ""
    assert count_directory_entries(str(top)) == 7


def test_a_driver_without_directories_is_said_not_guessed(tmp_path: Path) -> None:
    counted = count_image_entries({"GraphDriver": {"Name": "vfs", "Data": None}}, CLASSIC_INFO, str(tmp_path))
    assert counted.per_layer == [] and "vfs" in counted.error
    assert counted.to_dict()["total"] is None


def test_containerd_blobs_of_every_compression(tmp_path: Path) -> None:
    content = content_store(tmp_path)
    layers = [(PLAIN, layer_tar(10)), (GZIP, gzip.compress(layer_tar(20, long_names=True)))]
    if shutil.which("zstd"):
        zstd = subprocess.run(["zstd", "-q", "-c"], input=layer_tar(30), capture_output=True, check=True).stdout
        layers.append((ZSTD, zstd))
    manifest = {"schemaVersion": 2, "layers": [
        {"mediaType": media, "digest": put_blob(content, data), "size": len(data)} for media, data in layers]}
    manifest_digest = put_blob(content, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [
        {"digest": "sha256:" + "0" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": manifest_digest, "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    inspect = {"Id": put_blob(content, json.dumps(index).encode()), "Os": "linux", "Architecture": "amd64"}
    counted = count_image_entries(inspect, CONTAINERD_INFO, str(tmp_path))
    # each: the directory, the files, the link (pax headers for long names are not entries)
    assert counted.per_layer == [12, 22, 32][: len(layers)], counted.error
    assert "content store" in counted.source


def test_a_missing_blob_or_a_foreign_digest_leaves_the_count_out(tmp_path: Path) -> None:
    content = content_store(tmp_path)
    manifest = {"layers": [{"mediaType": GZIP, "digest": "sha256:" + "1" * 64, "size": 10}]}
    counted = count_image_entries({"Id": put_blob(content, json.dumps(manifest).encode())}, CONTAINERD_INFO,
                                  str(tmp_path))
    assert counted.per_layer == [] and "could not be counted" in counted.error
    traversal = count_image_entries({"Id": "sha256:../../../../etc/passwd"}, CONTAINERD_INFO, str(tmp_path))
    assert traversal.per_layer == [] and "not a sha256 digest" in traversal.error


def test_a_truncated_gzip_blob_is_an_error_not_a_count(tmp_path: Path) -> None:
    content = content_store(tmp_path)
    data = gzip.compress(layer_tar(50))[:200]
    manifest = {"layers": [{"mediaType": GZIP, "digest": put_blob(content, data), "size": len(data)}]}
    counted = count_image_entries({"Id": put_blob(content, json.dumps(manifest).encode())}, CONTAINERD_INFO,
                                  str(tmp_path))
    assert counted.per_layer == [] and counted.error


@pytest.mark.parametrize(("counts", "layers", "paired"), [([3, 4], 2, [3, 4]), ([3, 4], 3, None), ([], 0, None)])
def test_counts_pair_with_layers_only_one_to_one(counts: list[int], layers: int, paired: list[int] | None) -> None:
    from gpuhost.comfyui.entries import EntryCount

    assert entries_for(EntryCount(per_layer=counts), layers) == paired
