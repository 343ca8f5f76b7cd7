"""`docker pull` from a real registry on loopback (Debian's docker-registry): by digest, each
layer compression, a missing tag, a registry that is gone; `gpuhost layers` reads each layer's
compression from the registry the image came from."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuhost.comfyui.layers import image_layers
from gpuhost.comfyui.registry import fetch_layer_descriptors, split_repo_digest
from gpuhost.engine import EngineClient, EngineError
from gpuhost.units import MIB
from tests.support.images import import_busybox
from tests.support.registry import LocalRegistry, free_port, registry_available, skopeo_available

pytestmark = pytest.mark.skipif(
    not (registry_available() and skopeo_available()), reason="apt-get install docker-registry skopeo"
)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as started:
        yield started


@pytest.fixture(scope="module")
def busybox() -> Iterator[str]:
    ref = import_busybox(EngineClient(), "local/gpuhost-registry-pull", "src")
    yield ref
    docker("rmi", "-f", ref, check=False)


def remove(*refs: str) -> None:
    for ref in refs:
        docker("rmi", "-f", ref, check=False)


def test_docker_push_then_pull_by_digest(registry: LocalRegistry, busybox: str) -> None:
    target = f"{registry.address}/pushed:v1"
    docker("tag", busybox, target)
    docker("push", target)
    manifest, digest = registry.manifest("pushed", "v1")
    assert manifest["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    remove(target)
    pinned = f"{registry.address}/pushed@{digest}"
    try:
        docker("pull", pinned)
        inspect = EngineClient().get(f"/images/{pinned}/json")
        assert pinned in inspect["RepoDigests"]
        # pulling the same digest again changes nothing
        again = docker("pull", pinned)
        assert "Image is up to date" in again.stdout
    finally:
        remove(pinned)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_each_compression_pulls_and_layers_reports_it(
    registry: LocalRegistry, busybox: str, compression: str, tmp_path: Path
) -> None:
    repository = f"layers-{compression}"
    if compression == "none":
        archive = tmp_path / "image.tar"
        docker("save", "-o", str(archive), busybox)
        destination = registry.push_uncompressed(archive, repository, "v1")
    else:
        destination = registry.skopeo_copy(f"docker-daemon:{busybox}", repository, "v1")
    manifest, digest = registry.manifest(repository, "v1")
    try:
        docker("pull", destination)
        report = image_layers(EngineClient(), destination)
        assert report.registry_error == ""
        [layer] = [layer for layer in report.layers if layer.size > 0]
        assert layer.compression == compression
        assert layer.compressed_bytes == manifest["layers"][0]["size"]
        payload = report.to_dict()
        assert payload["pull"]["registry_layers"][0]["compression"] == compression
        assert payload["layers"][0]["compression"] == compression
        assert fetch_layer_descriptors(f"{registry.address}/{repository}@{digest}")[0].size == layer.compressed_bytes
        # one layer: its download overlaps nothing, whatever the recorded probe says
        predicted = image_layers(EngineClient(), destination, download_mib_s=0.5).to_dict()["pull"]["predicted"]
        assert predicted["download_s"] == round(layer.compressed_bytes / MIB / 0.5, 1)
    finally:
        remove(destination)


def test_a_missing_tag_is_a_clear_failure(registry: LocalRegistry) -> None:
    proc = docker("pull", f"{registry.address}/pushed:no-such-tag", check=False)
    assert proc.returncode != 0
    assert "manifest unknown" in proc.stderr or "not found" in proc.stderr


def test_an_unreachable_registry_is_a_clear_failure() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(EngineError) as error:
        EngineClient(timeout=60).request("POST", "/images/create", params={"fromImage": f"{address}/gone",
                                                                          "tag": "v1"})
    assert "connection refused" in str(error.value)
    assert time.monotonic() - start < 30
    with pytest.raises(OSError):
        fetch_layer_descriptors(f"{address}/gone@sha256:{'0' * 64}", deadline_s=5)


def test_repository_digests_name_their_registry() -> None:
    assert split_repo_digest("127.0.0.1:5000/bench@sha256:ab") == ("127.0.0.1:5000", "bench", "sha256:ab")
    assert split_repo_digest("comfyui@sha256:ab") == ("registry-1.docker.io", "library/comfyui", "sha256:ab")
    assert split_repo_digest("ghcr.io/org/img@sha256:ab") == ("ghcr.io", "org/img", "sha256:ab")
    assert split_repo_digest("user/img@sha256:ab") == ("registry-1.docker.io", "user/img", "sha256:ab")
    assert split_repo_digest("img:tag") is None
