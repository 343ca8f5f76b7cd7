"""The debootstrap base images (scripts/build-base-images) have the directory modes of a Debian system.

Their `/` was once mktemp's 0700. Docker's overlay2 driver shows a container a 0755 root whatever
the image says, so that went unseen; the vfs driver (Docker inside a container) keeps the image's
mode, and then no non-root process in those images could run. So the modes are read from the
image's layer itself (`docker save`), which every storage driver unpacks as it is, and then seen by
a non-root user inside a container.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.docker]

RELEASES = ("bookworm", "trixie")
SPECIAL_MODES = {"tmp": 0o1777, "var/tmp": 0o1777, "root": 0o700}
REBUILD = "scripts/build-base-images rebuilds images made by an older recipe"


class ChunkReader:
    """A file object over `image.save()`'s chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def layer_directory_modes(image: Any) -> dict[str, int]:
    """The mode of `/` (as ""), of each top-level directory and of var/tmp, from the image's one layer."""
    layers: list[dict[str, int]] = []
    chunks = ChunkReader(iter(image.save(chunk_size=1 << 20)))
    with tarfile.open(fileobj=chunks, mode="r|") as saved:  # type: ignore[call-overload]
        for member in saved:
            if not member.isfile():
                continue
            modes: dict[str, int] = {}
            try:
                with tarfile.open(fileobj=saved.extractfile(member), mode="r|") as layer:
                    for entry in layer:
                        name = entry.name.removeprefix("./").strip("/").removeprefix(".")
                        if entry.isdir() and (name.count("/") == 0 or name == "var/tmp"):
                            modes[name] = entry.mode
            except tarfile.ReadError:  # the manifest, the image's config, VERSION: not a layer
                continue
            layers.append(modes)
    assert len(layers) == 1, f"{len(layers)} layers: the base images are one docker import"
    return layers[0]


@pytest.fixture(scope="module")
def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=300)


@pytest.mark.parametrize("release", RELEASES)
def test_layer_has_debian_directory_modes(docker_client: Any, release: str) -> None:
    modes = layer_directory_modes(docker_client.images.get(f"local/debian-systemd:{release}"))
    assert "" in modes and "tmp" in modes and "var/tmp" in modes, sorted(modes)
    wrong = {name or "/": oct(mode) for name, mode in modes.items() if mode != SPECIAL_MODES.get(name, 0o755)}
    assert wrong == {}, f"directories with unexpected modes in local/debian-systemd:{release}: {REBUILD}"


@pytest.mark.parametrize("release", RELEASES)
def test_non_root_user_can_enter_root_and_run_python(docker_client: Any, release: str) -> None:
    output = docker_client.containers.run(
        f"local/debian-systemd:{release}",
        ["/bin/sh", "-c", 'stat -c "%a %n" / /tmp /var/tmp && python3 -c "print(\'python runs\')"'],
        user="65534:65534",
        network_mode="none",
        remove=True,
    )
    assert output.decode().split("\n") == ["755 /", "1777 /tmp", "1777 /var/tmp", "python runs", ""]


def test_fleet_image_follows_its_base_image() -> None:
    """The sshd image of the fleet tests is rebuilt when its base image is, not kept from an older one."""
    from tests.support import fleetlab

    tag = fleetlab.ensure_image("bookworm")
    image = fleetlab._docker().images.get(tag)
    base = fleetlab._docker().images.get("local/debian-systemd:bookworm")
    assert image.labels["gpuhost-fleet.base"] == base.id
    assert base.id in [step["Id"] for step in image.history()]
