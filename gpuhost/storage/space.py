"""Whether the planned data-root disk holds the image it is for, with either image store.

The classic store keeps an image once: its unpacked layers. The containerd image store keeps
each layer twice: the blob as pulled (gzip, zstd, or uncompressed) in its content store, beside
the unpacked snapshot. Model weights do not compress, so a model image's blobs are nearly as
large as its layers: the disk must hold the image twice. XFS keeps about 2 % for itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from gpuhost.facts.containerd import image_store
from gpuhost.model import UsageError
from gpuhost.units import parse_size

GIB = 1024**3
IMAGE_STORES = ("auto", "classic", "containerd")
FILESYSTEM_SHARE = 0.98  # what XFS leaves for files on a fresh filesystem


@dataclass
class SpacePlan:
    image_bytes: int = 0
    image_source: str = ""  # "--image-size", "the largest local image NAME", "" (nothing to check)
    store: str = "classic"
    store_source: str = ""
    copies: int = 1
    needed_bytes: int = 0
    disk_bytes: int = 0
    ok: bool = True
    message: str = ""


def parse_image_store(value: str) -> str:
    if value not in IMAGE_STORES:
        raise UsageError(f"image store {value[:40]!r} is not one of {', '.join(IMAGE_STORES)}",
                         "Example: --image-store containerd")
    return value


def parse_image_size(value: str) -> int:
    """--image-size: a size (`140GB`, `60GiB`); empty is 0, the largest local image."""
    return parse_size(value, "--image-size") if value else 0


def store_in_use(info: Optional[dict[str, Any]], daemon_json: Optional[dict[str, Any]]) -> tuple[str, str]:
    """(store, why): containerd when Docker's /info says so (driver-type) or daemon.json asks for it
    (features.containerd-snapshotter, in force at the next start), as the docker_storage role decides."""
    if isinstance(info, dict) and image_store(info) == "containerd":
        return "containerd", "Docker's /info (driver-type io.containerd.snapshotter.v1)"
    features = (daemon_json or {}).get("features")
    if isinstance(features, dict) and features.get("containerd-snapshotter") is True:
        return "containerd", "daemon.json features.containerd-snapshotter"
    return "classic", "Docker's /info" if isinstance(info, dict) else "Docker is not running, daemon.json " \
        "does not ask for the containerd store"


def plan_space(disk_bytes: int, image_bytes: int, image_source: str, store: str, store_source: str) -> SpacePlan:
    """Whether `disk_bytes` of disk hold an image of `image_bytes` in `store` (nothing to check at 0 bytes)."""
    plan = SpacePlan(image_bytes=image_bytes, image_source=image_source, store=store, store_source=store_source,
                     copies=2 if store == "containerd" else 1, disk_bytes=disk_bytes)
    if image_bytes <= 0 or disk_bytes <= 0:
        plan.message = "no image size to check the disk against (set docker_storage_image_size)"
        return plan
    plan.needed_bytes = image_bytes * plan.copies
    usable = int(disk_bytes * FILESYSTEM_SHARE)
    what = ("twice: the containerd store keeps each layer's blob beside the unpacked layer"
            if plan.copies == 2 else "once (the classic store)")
    plan.ok = usable >= plan.needed_bytes
    plan.message = (
        f"{image_source} ({image_bytes / GIB:.1f} GiB) needs {plan.needed_bytes / GIB:.1f} GiB, {what}; "
        f"the disk gives about {usable / GIB:.1f} GiB"
        + ("" if plan.ok else ": too small")
    )
    return plan
