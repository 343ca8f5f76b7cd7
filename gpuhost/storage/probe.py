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
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpuhost.engine import EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.docker import image_sizes
from gpuhost.facts.storage import locate
from gpuhost.model import UsageError, to_jsonable
from gpuhost.units import MIB, format_duration
from gpuhost.unpack import COMPRESSIONS, default_write_mibs, median_rate, predict_unpack_seconds

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
    unpack_mib_s: float  # uncompressed layers: Docker's own processing rate (the median round)
    rounds: int = 1
    # per layer compression: the median rate over the rounds, every round's rate, and why a
    # compression could not be measured (no compressor here, or a daemon that refuses it)
    rates_mib_s: dict[str, float] = field(default_factory=dict)
    round_rates_mib_s: dict[str, list[float]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)


# A model image is mostly weights (incompressible) with a Python environment beside them: the
# probe's layers hold the same mix, so gzip's cost per byte is the one such an image pays.
COMPRESSIBLE_FRACTION = 0.25


def _compressible_bytes(size: int) -> bytes:
    """`size` bytes of real files (this interpreter's standard library), text and bytecode."""
    import sysconfig

    parts: list[bytes] = []
    total = 0
    for directory, _, names in os.walk(sysconfig.get_paths()["stdlib"]):
        for name in sorted(names):
            try:
                with open(os.path.join(directory, name), "rb") as fh:
                    data = fh.read(size - total)
            except OSError:
                continue
            parts.append(data)
            total += len(data)
            if total >= size:
                return b"".join(parts)
    data = b"".join(parts) or b"gpuhost storage probe\n"
    return (data * (size // len(data) + 1))[:size]


def _compress_layer(layer_path: str, compression: str) -> str:
    """The layer file compressed as a registry would hold it; returns the path to archive."""
    if compression == "none":
        return layer_path
    if compression == "gzip":
        import gzip
        import shutil

        with open(layer_path, "rb") as source, gzip.open(layer_path + ".gz", "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target, 4 * MIB)
        return layer_path + ".gz"
    if compression == "zstd":
        import shutil
        import subprocess

        zstd = shutil.which("zstd")
        if zstd is None:
            raise FileNotFoundError("zstd is not installed")
        subprocess.run([zstd, "-q", "-3", "-T0", "-f", layer_path, "-o", layer_path + ".zst"], check=True)
        return layer_path + ".zst"
    raise ValueError(f"unknown compression {compression!r}")


def probe_image_archive(
    path: str, image_bytes: int, tag: str, layer_bytes: int = 128 * MIB, compression: str = "none"
) -> int:
    """Write a `docker save` archive of an image whose layers of `layer_bytes` hold incompressible
    64 MiB files and real files (COMPRESSIBLE_FRACTION of them), compressed with `compression`;
    returns the layers' unpacked size. Standard library (and the zstd tool for zstd) only: it
    runs inside the agent zipapp too."""
    import hashlib
    import io
    import tarfile

    layers = max(1, image_bytes // layer_bytes)
    per_layer = image_bytes // layers
    compressible = int(per_layer * COMPRESSIBLE_FRACTION)
    files = max(1, (per_layer - compressible) // (64 * MIB))
    text = _compressible_bytes(compressible) if compressible else b""
    diff_ids: list[str] = []
    total = 0
    with tarfile.open(path, "w") as archive:
        for index in range(layers):
            layer_path = f"{path}.layer{index}"
            with tarfile.open(layer_path, "w") as layer:
                for number in range(files):
                    info = tarfile.TarInfo(f"gpuhost-probe/{index:03d}-{number:03d}.bin")
                    info.size, info.mode, info.mtime = (per_layer - compressible) // files, 0o644, int(time.time())
                    layer.addfile(info, io.BytesIO(os.urandom(info.size)))
                if text:
                    info = tarfile.TarInfo(f"gpuhost-probe/{index:03d}-env.py")
                    info.size, info.mode, info.mtime = len(text), 0o644, int(time.time())
                    layer.addfile(info, io.BytesIO(text))
            digest = hashlib.sha256()
            with open(layer_path, "rb") as fh:
                for chunk in iter(lambda: fh.read(4 * MIB), b""):
                    digest.update(chunk)
            diff_ids.append("sha256:" + digest.hexdigest())
            total += os.path.getsize(layer_path)
            stored = layer_path
            try:
                stored = _compress_layer(layer_path, compression)
                archive.add(stored, arcname=f"layer{index}/layer.tar")
            finally:
                for leftover in {layer_path, stored}:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created_by": "gpuhost storage probe: weights and files"} for _ in diff_ids],
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
DEFAULT_UNPACK_ROUNDS = 3


def _load_archive(client: EngineClient, archive: str, tag: str) -> float:
    """Seconds `docker load` of `archive` took; the image is removed again."""
    try:
        with open(archive, "rb") as fh:
            start = time.perf_counter()
            body = client.upload("/images/load", fh, os.path.getsize(archive), params={"quiet": True}, timeout=600.0)
            seconds = time.perf_counter() - start
        if b"errorDetail" in body:
            raise EngineError(500, f"docker load of the probe image failed: {body[-300:]!r}")
        return seconds
    finally:
        with contextlib.suppress(EngineError):
            client.request("DELETE", f"/images/{tag}", params={"force": True})


def measure_unpack(
    client: EngineClient,
    work_dir: str,
    size_bytes: int = DEFAULT_UNPACK_PROBE_BYTES,
    rounds: int = DEFAULT_UNPACK_ROUNDS,
    compressions: tuple[str, ...] = COMPRESSIONS,
) -> UnpackProbeResult:
    """Time `docker load` of a small image into the daemon's data-root, `rounds` times for each
    layer compression, then remove it: Docker's own per-byte cost (reading, decompressing,
    hashing, extracting) on this host, the median round per compression.

    The probe is small enough to stay in the page cache, so it measures the processing side of
    unpacking; measure_write() measures the device side. gpuhost.unpack combines the two. A
    compression this host cannot make (no zstd tool) or the daemon refuses (Docker before 23
    cannot extract zstd layers) is listed in `unsupported`.
    """
    if rounds < 1:
        raise ValueError("the unpack probe needs at least one round")
    result = UnpackProbeResult(image_bytes=0, seconds=0.0, unpack_mib_s=0.0, rounds=rounds)
    # the first load into a daemon pays one-time setup; a small untimed load takes it
    warm_up = [("none", 8 * MIB, 1, False)]
    plan = warm_up + [(compression, size_bytes, rounds, True) for compression in compressions]
    for compression, size, count, timed in plan:
        tag = f"{PROBE_IMAGE_REPO}:{os.getpid()}-{int(time.time() * 1000)}-{compression}"
        fd, archive = tempfile.mkstemp(prefix=".gpuhost-probe-", suffix=".tar", dir=work_dir)
        os.close(fd)
        try:
            try:
                layer_bytes = probe_image_archive(
                    archive, size, tag, layer_bytes=min(size, 128 * MIB), compression=compression
                )
            except (OSError, ValueError) as exc:
                if compression == "none":
                    raise
                result.unsupported[compression] = f"no probe archive: {exc}"
                continue
            seconds: list[float] = []
            for _ in range(count):
                try:
                    seconds.append(_load_archive(client, archive, tag))
                except EngineError as exc:
                    if compression == "none":
                        raise
                    result.unsupported[compression] = f"Docker could not load {compression} layers: {exc}"
                    break
        finally:
            os.unlink(archive)
        if not timed or compression in result.unsupported:
            continue
        rates = [round(layer_bytes / MIB / s, 1) for s in seconds]
        result.round_rates_mib_s[compression] = rates
        result.rates_mib_s[compression] = round(median_rate(rates), 1)
        if compression == "none":
            result.image_bytes = layer_bytes
            result.seconds = round(statistics.median(seconds), 4)
            result.unpack_mib_s = result.rates_mib_s["none"]
    return result


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


# 1 TiB: far above any useful probe; larger numbers overflow the free-space arithmetic
MAX_PROBE_MIB = 1024 * 1024


def probe_storage(
    path: str = "",
    size_mib: int = 512,
    unpack: bool = False,
    image_bytes: int = 0,
    client: EngineClient | None = None,
    record: str = "",
) -> StorageProbeReport:
    """Measure where `path` (default: Docker's data-root) lives and predict an image's unpack time."""
    if not 16 <= size_mib <= MAX_PROBE_MIB:
        raise UsageError(f"--size-mib must be from 16 to {MAX_PROBE_MIB} (1 TiB), got {str(size_mib)[:40]}",
                         "Example: --size-mib 512")
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
