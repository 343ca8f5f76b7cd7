"""Whether the data-root disk holds the image: once with the classic store, twice with the
containerd store (each layer's blob is kept beside the unpacked layer)."""

from __future__ import annotations

import pytest

from gpuhost.model import UsageError
from gpuhost.storage.plan import StorageRequest
from gpuhost.storage.space import parse_image_size, parse_image_store, plan_space, store_in_use

GIB = 1024**3
CONTAINERD_INFO = {"DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}


def test_the_containerd_store_needs_the_image_twice() -> None:
    image = 100 * GIB
    classic = plan_space(150 * GIB, image, "the image (--image-size)", "classic", "--image-store")
    assert classic.ok and classic.copies == 1 and classic.needed_bytes == image
    containerd = plan_space(150 * GIB, image, "the image (--image-size)", "containerd", "Docker's /info")
    assert not containerd.ok and containerd.copies == 2 and containerd.needed_bytes == 2 * image
    assert "twice" in containerd.message and containerd.message.endswith("too small")
    assert plan_space(210 * GIB, image, "x", "containerd", "").ok


def test_xfs_keeps_its_share_of_the_disk() -> None:
    assert not plan_space(100 * GIB, 99 * GIB, "x", "classic", "").ok
    assert plan_space(100 * GIB, 97 * GIB, "x", "classic", "").ok


def test_no_image_or_no_disk_is_nothing_to_check() -> None:
    for disk, image in ((100 * GIB, 0), (0, 100 * GIB)):
        plan = plan_space(disk, image, "", "containerd", "")
        assert plan.ok and plan.needed_bytes == 0 and "docker_storage_image_size" in plan.message


def test_the_store_from_docker_or_daemon_json() -> None:
    assert store_in_use(CONTAINERD_INFO, None)[0] == "containerd"
    # asked for in daemon.json: in force at the next start
    assert store_in_use({"DriverStatus": []}, {"features": {"containerd-snapshotter": True}})[0] == "containerd"
    assert store_in_use({"DriverStatus": []}, {})[0] == "classic"
    assert store_in_use(None, {"features": {"containerd-snapshotter": True}}) == (
        "containerd", "daemon.json features.containerd-snapshotter")
    assert store_in_use(None, {"features": {"containerd-snapshotter": "true"}})[0] == "classic"
    assert store_in_use(None, None)[0] == "classic"


@pytest.mark.parametrize("value", ["big", "-1GB", "nan", "inf", "1e400GB", "100 GB ", " 100GB"])
def test_bad_image_sizes_are_refused(value: str) -> None:
    with pytest.raises(UsageError):
        parse_image_size(value)


@pytest.mark.parametrize("value", ["", "Containerd", "overlay2", "containerd "])
def test_bad_image_stores_are_refused(value: str) -> None:
    with pytest.raises(UsageError):
        parse_image_store(value)


def test_the_request_carries_both() -> None:
    request = StorageRequest.parse(image_size="140GB", image_store="containerd")
    assert (request.image_bytes, request.image_store) == (140 * 1000**3, "containerd")
    assert StorageRequest.parse().image_bytes == 0
