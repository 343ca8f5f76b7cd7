"""Measure the sustained write throughput of the filesystem that holds a directory.

The unpack-time model (gpuhost.unpack) needs one figure per data-root device: how fast it takes
sequential writes. The probe writes incompressible data with O_DIRECT in large blocks, so the
page cache neither absorbs the writes nor hides the device, then fdatasyncs and deletes the file.
Filesystems without O_DIRECT (tmpfs) are measured with buffered writes plus fdatasync.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpuhost.engine import EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.docker import image_sizes
from gpuhost.facts.storage import locate
from gpuhost.model import UsageError, to_jsonable
from gpuhost.units import MIB, format_duration
from gpuhost.unpack import default_write_mibs, predict_unpack_seconds

if TYPE_CHECKING:
    from gpuhost.engine import EngineClient

DEFAULT_PROBE_BYTES = 512 * MIB
DEFAULT_BLOCK_BYTES = 8 * MIB
DEFAULT_MAX_SECONDS = 10.0


@dataclass
class ProbeResult:
    path: str
    bytes_written: int
    seconds: float
    direct_io: bool
    write_mib_s: float
    free_bytes_before: int


def _aligned_random_buffer(size: int) -> mmap.mmap:
    # an anonymous mapping is page aligned, which O_DIRECT requires of the buffer
    buffer = mmap.mmap(-1, size)
    chunk = os.urandom(min(size, 4 * MIB))
    for offset in range(0, size, len(chunk)):
        buffer[offset : offset + len(chunk)] = chunk[: size - offset]
    return buffer


def _open_probe_file(directory: str) -> tuple[int, str, bool]:
    fd, path = tempfile.mkstemp(prefix=".gpuhost-probe-", dir=directory)
    os.close(fd)
    flags = os.O_WRONLY | os.O_TRUNC
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct), path, True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                os.unlink(path)
                raise
    return os.open(path, flags), path, False


def measure_write(
    directory: str,
    size_bytes: int = DEFAULT_PROBE_BYTES,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> ProbeResult:
    """Write up to `size_bytes` (stopping early after `max_seconds`) and return the throughput.

    Raises ValueError when the directory lacks room for the probe (it keeps 10% of the free
    space untouched) and OSError when it cannot be written.
    """
    if size_bytes < block_bytes or block_bytes % 4096:
        raise ValueError("probe size must be at least one block and blocks a multiple of 4 KiB")
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if size_bytes > free * 0.9:
        raise ValueError(
            f"{directory} has {free / MIB:.0f} MiB free: too little for a {size_bytes / MIB:.0f} MiB write probe"
        )
    buffer = _aligned_random_buffer(block_bytes)
    fd, path, direct_io = _open_probe_file(directory)
    written = 0
    try:
        start = time.perf_counter()
        deadline = start + max_seconds
        while written < size_bytes:
            written += os.write(fd, buffer)
            if time.perf_counter() > deadline:
                break
        os.fdatasync(fd)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
        buffer.close()
    return ProbeResult(
        path=directory,
        bytes_written=written,
        seconds=round(seconds, 4),
        direct_io=direct_io,
        write_mib_s=round(written / MIB / seconds, 1) if seconds > 0 else 0.0,
        free_bytes_before=free,
    )


@dataclass
class UnpackProbeResult:
    image_bytes: int
    seconds: float
    unpack_mib_s: float


def probe_image_archive(path: str, image_bytes: int, tag: str, layer_bytes: int = 128 * MIB) -> int:
    """Write a `docker save` archive of an image of incompressible 64 MiB files in layers of
    `layer_bytes` (as a model image's layers are); returns the layers' total size. Standard
    library only: it runs inside the agent zipapp too."""
    import hashlib
    import io
    import json
    import tarfile

    layers = max(1, image_bytes // layer_bytes)
    per_layer = image_bytes // layers
    files = max(1, per_layer // (64 * MIB))
    diff_ids: list[str] = []
    total = 0
    with tarfile.open(path, "w") as archive:
        for index in range(layers):
            layer_path = f"{path}.layer{index}"
            with tarfile.open(layer_path, "w") as layer:
                for number in range(files):
                    info = tarfile.TarInfo(f"gpuhost-probe/{index:03d}-{number:03d}.bin")
                    info.size, info.mode, info.mtime = per_layer // files, 0o644, int(time.time())
                    layer.addfile(info, io.BytesIO(os.urandom(info.size)))
            digest = hashlib.sha256()
            with open(layer_path, "rb") as fh:
                for chunk in iter(lambda: fh.read(4 * MIB), b""):
                    digest.update(chunk)
            diff_ids.append("sha256:" + digest.hexdigest())
            total += os.path.getsize(layer_path)
            archive.add(layer_path, arcname=f"layer{index}/layer.tar")
            os.unlink(layer_path)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created_by": "gpuhost storage probe: incompressible data"} for _ in diff_ids],
            }
        ).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps(
            [{"Config": config_name, "RepoTags": [tag], "Layers": [f"layer{i}/layer.tar" for i in range(layers)]}]
        ).encode()
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return total


PROBE_IMAGE_REPO = "gpuhost-storage-probe"
DEFAULT_UNPACK_PROBE_BYTES = 256 * MIB


def measure_unpack(
    client: EngineClient, work_dir: str, size_bytes: int = DEFAULT_UNPACK_PROBE_BYTES
) -> UnpackProbeResult:
    """Time `docker load` of a small image of incompressible data into the daemon's data-root,
    then remove it: Docker's own per-byte cost (reading, hashing, extracting) on this host.

    The probe is small enough to stay in the page cache, so it measures the processing side of
    unpacking; measure_write() measures the device side. gpuhost.unpack combines the two.
    """

    seconds = 0.0
    layer_bytes = 0
    # the first load into a daemon pays one-time setup; a small untimed load takes it
    for size, timed in ((8 * MIB, False), (size_bytes, True)):
        tag = f"{PROBE_IMAGE_REPO}:{os.getpid()}-{int(time.time() * 1000)}"
        fd, archive = tempfile.mkstemp(prefix=".gpuhost-probe-", suffix=".tar", dir=work_dir)
        os.close(fd)
        try:
            layer_bytes = probe_image_archive(archive, size, tag, layer_bytes=min(size, 128 * MIB))
            length = os.path.getsize(archive)
            with open(archive, "rb") as fh:
                start = time.perf_counter()
                body = client.upload("/images/load", fh, length, params={"quiet": True}, timeout=600.0)
                if timed:
                    seconds = time.perf_counter() - start
            if b"errorDetail" in body:
                raise EngineError(500, f"docker load of the probe image failed: {body[-300:]!r}")
        finally:
            os.unlink(archive)
            with contextlib.suppress(EngineError):
                client.request("DELETE", f"/images/{tag}", params={"force": True})
    return UnpackProbeResult(
        image_bytes=layer_bytes, seconds=round(seconds, 4), unpack_mib_s=round(layer_bytes / MIB / seconds, 1)
    )


PROBE_SCHEMA = "gpuhost.storage-probe/v1"
REFERENCE_IMAGE_BYTES = 140 * 1000**3  # the 140 GB ComfyUI image of the seed figures


@dataclass
class StorageProbeReport:
    path: str
    mountpoint: str = ""
    device: str = ""
    device_class: str = ""
    fstype: str = ""
    measured_at: float = 0.0
    write: ProbeResult | None = None
    unpack: UnpackProbeResult | None = None
    image_ref: str = ""
    image_bytes: int = 0
    predicted_unpack_s: float = 0.0
    predicted_unpack: str = ""
    default_write_mib_s: float = 0.0
    predicted_with_default_s: float = 0.0
    schema: str = PROBE_SCHEMA


def largest_image(client: EngineClient) -> tuple[str, int] | None:
    """The largest local image (reference and size) through the Engine API, or None."""

    images = image_sizes(client)
    return (images[0].reference, images[0].size_bytes) if images else None


def probe_storage(
    path: str = "",
    size_mib: int = 512,
    unpack: bool = False,
    image_bytes: int = 0,
    client: EngineClient | None = None,
    record: str = "",
) -> StorageProbeReport:
    """Measure where `path` (default: Docker's data-root) lives and predict an image's unpack time."""
    if size_mib < 16:
        raise UsageError("--size-mib must be at least 16")
    if not path:
        if client is None:
            raise UsageError("no path given and no Docker client to ask for its data-root")
        try:
            path = str(client.get("/info").get("DockerRootDir") or "")
        except (EngineUnavailable, EnginePermissionDenied, EngineError, OSError) as exc:
            raise UsageError(f"no path given and Docker's data-root is unknown: {exc}", "Pass --path DIR.") from exc
    if not os.path.isdir(path):
        raise UsageError(f"{path} is not a directory")
    location = locate(path)
    report = StorageProbeReport(
        path=path,
        mountpoint=location.mountpoint,
        device=location.device,
        device_class=location.device_class,
        fstype=location.fstype,
        measured_at=round(time.time(), 1),
    )
    report.write = measure_write(path, size_bytes=size_mib * MIB)
    if unpack:
        if client is None:
            raise UsageError("--unpack needs Docker (the probe loads a small image)")
        report.unpack = measure_unpack(client, path if os.access(path, os.W_OK) else "/var/tmp")
    if image_bytes <= 0 and client is not None:
        found = largest_image(client)
        if found is not None and found[1] > 0:
            report.image_ref, image_bytes = found
    if image_bytes <= 0:
        report.image_ref, image_bytes = "reference 140 GB image", REFERENCE_IMAGE_BYTES
    report.image_bytes = image_bytes
    unpack_rate = report.unpack.unpack_mib_s if report.unpack else None
    report.predicted_unpack_s = round(predict_unpack_seconds(image_bytes, report.write.write_mib_s, unpack_rate), 1)
    report.predicted_unpack = format_duration(report.predicted_unpack_s)
    report.default_write_mib_s = default_write_mibs(location.device_class or "other")
    report.predicted_with_default_s = round(predict_unpack_seconds(image_bytes, report.default_write_mib_s), 1)
    if record:
        os.makedirs(os.path.dirname(record) or ".", exist_ok=True)
        tmp = record + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(to_jsonable(report), fh, indent=2)
        os.replace(tmp, record)
    return report
