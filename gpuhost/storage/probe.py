"""Measure the sustained write throughput of the filesystem that holds a directory, and (with
--unpack) Docker's own rate of pulling images onto it.

The unpack-time model (gpuhost.unpack) needs one figure per data-root device: how fast it takes
sequential writes. The probe writes incompressible data with O_DIRECT in large blocks, so the
page cache neither absorbs the writes nor hides the device, then fdatasyncs and deletes the file.
Filesystems without O_DIRECT (tmpfs) are measured with buffered writes plus fdatasync.

The unpack probe pulls its images (gpuhost.storage.probe_images) from a registry of its own on
loopback (gpuhost.storage.probe_registry) into the store the daemon uses: data-root with the
classic store, containerd's root with the containerd image store.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import mmap
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuhost.engine import (
    DOCKER_HOST_OPTION,
    EngineBadAnswer,
    EngineError,
    EnginePermissionDenied,
    EngineUnavailable,
)
from gpuhost.facts.containerd import collect_containerd, image_store
from gpuhost.facts.decompressor import Decompressor, collect_decompressor, find_daemon
from gpuhost.facts.docker import image_sizes
from gpuhost.facts.storage import locate
from gpuhost.model import SourceError, UsageError, to_jsonable
from gpuhost.options import AGENT, CLI, Command, Option, json_flag
from gpuhost.storage.probe_images import SMALL_FILES_PER_GIB, ProbeImage, small_files_image, weights_image
from gpuhost.storage.probe_registry import ProbeRegistry, file_blob
from gpuhost.units import MIB, format_duration
from gpuhost.unpack import (
    COMPRESSIONS,
    default_write_mibs,
    median_rate,
    per_entry_cost_us,
    predict_unpack_seconds,
    processing_rate,
)

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
    # rounds timed until the data was on the device, and the device's write rate taken out
    until_durable: bool = False
    device_write_mib_s: float | None = None
    # how busy all the host's CPUs were during the rounds (median): near 100, a pull's download
    # cannot run beside the unpacking
    cpu_busy_pct: float | None = None
    # the share of all the host's CPUs the daemons themselves used (median of the rounds)
    daemon_cpu_pct: float | None = None
    # each uncompressed round also loads a layer of many small files (a Python environment's
    # shape): what one more tar entry costs beyond its bytes, in microseconds
    files_entries: int = 0
    files_bytes: int = 0
    # per compression: every round's seconds, and the cost per entry of the median round (a
    # decompressor that runs beside the extraction hides behind the files)
    files_round_seconds: dict[str, list[float]] = field(default_factory=dict)
    per_entry_us: dict[str, float] = field(default_factory=dict)
    # "pull" (from the probe's registry on loopback) or "load" (a daemon that cannot reach it)
    method: str = ""
    pull_error: str = ""


PROBE_IMAGE_REPO = "gpuhost-storage-probe"
# Large enough that Docker's per-byte cost reaches what a large image pays: on a 2-core host it
# rose by half from 256 MiB to 1 GiB loads and stayed there at 2 GiB (bench/unpack.py).
DEFAULT_UNPACK_PROBE_BYTES = 1024 * MIB
MIN_UNPACK_PROBE_MIB = 64
MAX_UNPACK_PROBE_MIB = 16 * 1024
DEFAULT_UNPACK_ROUNDS = 3
# How often the probe pushes the store's dirty pages to the device during a pull.
WRITEBACK_INTERVAL_S = 0.2


def _syncfs(fd: int) -> None:
    """Flush one filesystem (the one `fd` is on); the whole system where syncfs is missing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


@contextlib.contextmanager
def _written_back(data_root: str) -> Iterator[None]:
    """While the block runs, write the data-root filesystem's dirty pages to the device every
    WRITEBACK_INTERVAL_S, and once more at its end.

    An image much larger than the kernel's dirty-page threshold (10% of memory) is unpacked with
    the device writing all along, Docker's staging copy of every layer included; a probe small
    enough to sit in the page cache would otherwise time only the copying into memory."""
    if not data_root:
        yield
        return
    import threading

    fd = os.open(data_root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(WRITEBACK_INTERVAL_S):
            _syncfs(fd)

    flusher = threading.Thread(target=flush, name="gpuhost-probe-writeback", daemon=True)
    flusher.start()
    try:
        yield
    finally:
        stop.set()
        flusher.join()
        try:
            _syncfs(fd)
        finally:
            os.close(fd)


def _cpu_counters() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(values) < 5:
        return None
    total = sum(values[:8])
    return total - values[3] - values[4], total


def _busy_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]) * 100, 1)


def process_cpu_ticks(pids: list[int]) -> int | None:
    """CPU clock ticks of `pids` and their reaped children (unpigz, dockerd's untar re-exec)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])
        except (OSError, ValueError, IndexError):
            return None
    return total


def _daemon_pct(before: int | None, after: int | None, seconds: float) -> float | None:
    if before is None or after is None or seconds <= 0:
        return None
    cores = os.cpu_count() or 1
    return round((after - before) / os.sysconf("SC_CLK_TCK") / seconds / cores * 100, 1)


@dataclass
class _Round:
    seconds: float
    busy_pct: float | None
    daemon_pct: float | None = None


def _timed(client: EngineClient, tag: str, data_root: str, daemon_pids: list[int],
           action: Callable[[], bytes], what: str) -> _Round:
    """Time `action` (a load or a pull that leaves the image `tag`) until its data is on the
    data-root device (when `data_root` is given); the image is removed again."""
    try:
        before = _cpu_counters()
        daemon_before = process_cpu_ticks(daemon_pids)
        start = time.perf_counter()
        with _written_back(data_root):
            body = action()
        seconds = time.perf_counter() - start
        busy = _busy_pct(before, _cpu_counters())
        daemon = _daemon_pct(daemon_before, process_cpu_ticks(daemon_pids), seconds) if daemon_pids else None
        if b"errorDetail" in body:
            raise EngineError(500, f"docker {what} of the probe image failed: {body[-300:]!r}")
        return _Round(seconds, busy, daemon)
    finally:
        with contextlib.suppress(EngineError):
            client.request("DELETE", f"/images/{tag}", params={"force": True})


class _Load:
    """`docker load` of a `docker save` archive: what a host the probe's registry cannot reach gets."""

    method = "load"

    def __init__(self, client: EngineClient, work_dir: str) -> None:
        self.client, self.work_dir = client, work_dir

    def prepare(self, image: ProbeImage, name: str) -> tuple[str, str]:
        fd, archive = tempfile.mkstemp(prefix=".gpuhost-probe-", suffix=".tar", dir=self.work_dir)
        os.close(fd)
        tag = f"{PROBE_IMAGE_REPO}:{name}"
        try:
            image.write_archive(archive, tag)
        except BaseException:
            os.unlink(archive)
            raise
        return tag, archive

    def run(self, prepared: tuple[str, str], data_root: str, daemon_pids: list[int]) -> _Round:
        tag, archive = prepared

        def load() -> bytes:
            with open(archive, "rb") as fh:
                return self.client.upload("/images/load", fh, os.path.getsize(archive), params={"quiet": True},
                                          timeout=1800.0)

        return _timed(self.client, tag, data_root, daemon_pids, load, "load")

    def release(self, prepared: tuple[str, str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(prepared[1])


class _Pull:
    """`docker pull` from the probe's own registry on loopback (gpuhost.storage.probe_registry)."""

    method = "pull"

    def __init__(self, client: EngineClient, registry: ProbeRegistry) -> None:
        self.client, self.registry = client, registry

    def prepare(self, image: ProbeImage, name: str) -> tuple[str, str]:
        reference = self.registry.add_image(name, [(file_blob(layer.path), layer.compression)
                                                   for layer in image.layers], image.config())
        return reference, name

    def run(self, prepared: tuple[str, str], data_root: str, daemon_pids: list[int]) -> _Round:
        reference = prepared[0]
        repository, tag = reference.rsplit(":", 1)

        def pull() -> bytes:
            return self.client.upload("/images/create", io.BytesIO(b""), 0, content_type="text/plain",
                                      params={"fromImage": repository, "tag": tag}, timeout=1800.0)

        return _timed(self.client, reference, data_root, daemon_pids, pull, "pull")

    def release(self, prepared: tuple[str, str]) -> None:
        self.registry.forget(prepared[1])


def measure_unpack(
    client: EngineClient,
    work_dir: str,
    size_bytes: int = DEFAULT_UNPACK_PROBE_BYTES,
    rounds: int = DEFAULT_UNPACK_ROUNDS,
    compressions: tuple[str, ...] = COMPRESSIONS,
    *,
    data_root: str = "",
    write_mib_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    daemon_pids: list[int] | None = None,
    pull: bool = True,
) -> UnpackProbeResult:
    """Time `docker pull` of an image from a registry on this host's loopback into the daemon's
    store, `rounds` times for each layer compression, then remove it: Docker's own per-byte cost
    (fetching, hashing, storing, decompressing, extracting) on this host, the median round per
    compression. A daemon that cannot reach the registry (another host's, a rootless one) is
    timed loading a `docker save` archive instead (`method`, `pull_error`); `pull=False` loads.

    With `data_root` (where the daemon's layers land, on this machine) each round lasts until
    the data is on the device, with the device writing all along as it does for a large image
    (_written_back), and `write_mib_s` (measure_write's figure for that device) takes the
    device's share back out (processing_rate). Without, the rounds time the pull alone. A
    compression this host cannot make (no zstd tool) or the daemon refuses (Docker before 23
    cannot extract zstd layers) is listed in `unsupported`.

    Each round also pulls a one-layer image of small files (SMALL_FILES_PER_GIB per GiB of
    `size_bytes`) in the same compression: with the bytes' share taken out, what one more tar
    entry costs with that compression.
    `daemon_pids` (dockerd, and containerd with the containerd store) give the daemons' own
    share of the CPUs.
    """
    if rounds < 1:
        raise ValueError("the unpack probe needs at least one round")
    say = progress or (lambda _message: None)
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(ProbeRegistry(PROBE_IMAGE_REPO)) if pull else None
        transport: _Pull | _Load = _Pull(client, registry) if registry is not None else _Load(client, work_dir)
        probe = _UnpackRounds(transport, work_dir, data_root, write_mib_s, say, daemon_pids or [])
        probe.result.rounds = rounds
        try:
            # the first pull into a daemon pays one-time setup; a small untimed one takes it, and
            # tells whether the daemon reaches the registry
            probe.measure("none", 8 * MIB, 1, timed=False)
        except EngineError as exc:
            if registry is None:
                raise
            probe.result.pull_error = str(exc)[:300]
            probe.transport = _Load(client, work_dir)
            probe.measure("none", 8 * MIB, 1, timed=False)
        probe.result.method = probe.transport.method
        probe.small_files = max(100, size_bytes * SMALL_FILES_PER_GIB // (1024 * MIB))
        for compression in compressions:
            probe.measure(compression, size_bytes, rounds, timed=True)
    return probe.finish()


class _UnpackRounds:
    """The probe's pulls (or loads), one compression at a time, and what they measured."""

    def __init__(self, transport: _Pull | _Load, work_dir: str, data_root: str, write_mib_s: float | None,
                 say: Callable[[str], None], daemon_pids: list[int]) -> None:
        self.transport, self.work_dir, self.data_root, self.write_mib_s = transport, work_dir, data_root, write_mib_s
        self.say, self.daemon_pids = say, daemon_pids
        self.result = UnpackProbeResult(image_bytes=0, seconds=0.0, unpack_mib_s=0.0,
                                        until_durable=bool(data_root), device_write_mib_s=write_mib_s)
        self.small_files = 0  # files in each round's small-files image (0: none)
        self.busy: list[float] = []
        self.daemon: list[float] = []

    def _name(self, what: str) -> str:
        return f"{os.getpid()}-{int(time.time() * 1000)}-{what}"

    def measure(self, compression: str, size: int, count: int, timed: bool) -> None:
        result = self.result
        if timed:
            self.say(f"building a {size / MIB:.0f} MiB probe image with {compression} layers")
        try:
            image = weights_image(self.work_dir, size, layer_bytes=min(size, 128 * MIB), compression=compression)
        except (OSError, ValueError, subprocess.CalledProcessError) as exc:
            if compression == "none":
                raise
            result.unsupported[compression] = f"no probe image: {exc}"
            return
        measured: list[_Round] = []
        files: tuple[str, str] | None = None
        small: ProbeImage | None = None
        prepared = self.transport.prepare(image, self._name(compression))
        try:
            if timed and self.small_files:
                small = small_files_image(self.work_dir, self.small_files, compression)
                result.files_bytes, result.files_entries = small.unpacked_bytes, small.entries
                files = self.transport.prepare(small, self._name(f"files-{compression}"))
            for number in range(count):
                if timed:
                    self.say(f"docker {self.transport.method}, {compression} layers, round {number + 1} of {count}")
                try:
                    measured.append(self.transport.run(prepared, self.data_root if timed else "", self.daemon_pids))
                    if files is not None:
                        self.say(f"docker {self.transport.method}, {result.files_entries} small files, "
                                 f"round {number + 1} of {count}")
                        loaded = self.transport.run(files, self.data_root, self.daemon_pids)
                        result.files_round_seconds.setdefault(compression, []).append(round(loaded.seconds, 3))
                except EngineError as exc:
                    if compression == "none" or not timed:
                        raise
                    result.unsupported[compression] = f"Docker could not {self.transport.method} " \
                        f"{compression} layers: {exc}"
                    return
        finally:
            self.transport.release(prepared)
            if files is not None:
                self.transport.release(files)
            if small is not None:
                small.remove()
            image.remove()
        if not timed:
            return
        image_mib = image.unpacked_bytes / MIB
        result.round_rates_mib_s[compression] = [round(image_mib / r.seconds, 1) for r in measured]
        median_seconds = image_mib / median_rate(result.round_rates_mib_s[compression])
        result.rates_mib_s[compression] = round(processing_rate(image_mib, median_seconds, self.write_mib_s), 1)
        self.busy.extend(r.busy_pct for r in measured if r.busy_pct is not None)
        self.daemon.extend(r.daemon_pct for r in measured if r.daemon_pct is not None)
        if compression == "none":
            result.image_bytes = image.unpacked_bytes
            result.seconds = round(median_seconds, 4)
            result.unpack_mib_s = result.rates_mib_s["none"]

    def finish(self) -> UnpackProbeResult:
        result = self.result
        if self.busy:
            result.cpu_busy_pct = round(statistics.median(self.busy), 1)
        if self.daemon:
            result.daemon_cpu_pct = round(statistics.median(self.daemon), 1)
        for compression, seconds in result.files_round_seconds.items():
            bytes_rate = result.rates_mib_s.get(compression, 0.0)
            if seconds and bytes_rate > 0:
                result.per_entry_us[compression] = round(per_entry_cost_us(
                    statistics.median(seconds), result.files_bytes, result.files_entries, bytes_rate,
                    self.write_mib_s), 2)
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
    # with --unpack: the image store the daemon uses ("classic" or "containerd"), the directory
    # its layers land in (data-root, or containerd's root), and what decompresses its gzip layers
    image_store: str = ""
    store_root: str = ""
    decompressor: dict[str, Any] | None = None
    schema: str = PROBE_SCHEMA


def largest_image(client: EngineClient) -> tuple[str, int] | None:
    """The largest local image (reference and size) through the Engine API, or None."""

    images = image_sizes(client)
    return (images[0].reference, images[0].size_bytes) if images else None


# 1 TiB: far above any useful probe; larger numbers overflow the free-space arithmetic
MAX_PROBE_MIB = 1024 * 1024
MIN_PROBE_MIB = 16
DEFAULT_PROBE_MIB = DEFAULT_PROBE_BYTES // MIB
MAX_IMAGE_BYTES = 1 << 60  # 1 EiB


def _daemon_pids(found: Decompressor, docker_host: str) -> list[int]:
    """dockerd's pid, and containerd's with the containerd store (where the layers are applied)."""
    socket = docker_host[len("unix://"):] if docker_host.startswith("unix://") else ""
    dockerd = find_daemon("dockerd", socket) if socket else None
    pids = [pid for pid in (dockerd, found.pid if found.process == "containerd" else None) if pid is not None]
    return pids if dockerd is not None else []


def parse_compressions(text: str) -> tuple[str, ...]:
    """--compressions: some of none, gzip, zstd, comma-separated, each once (the first one's
    rounds also pull the small-files image)."""
    names = text.split(",")
    if not text or any(n not in COMPRESSIONS for n in names) or len(set(names)) != len(names):
        raise UsageError(f"--compressions must name some of {', '.join(COMPRESSIONS)}, comma-separated, each once, "
                         f"got {text[:80]!r}", "Example: --compressions gzip")
    return tuple(names)


def check_record_path(path: str) -> str:
    """Where --record writes: an absolute path, without `..`, control characters or surrounding
    spaces, that is not a directory."""
    if (not os.path.isabs(path) or path != path.strip() or any(ord(c) < 32 or ord(c) == 127 for c in path)
            or ".." in path.split("/") or path.endswith("/")):
        raise UsageError(f"--record must be an absolute file path without '..', got {path[:200]!r}",
                         "Example: --record /var/lib/gpuhost/storage-probe.json")
    if os.path.isdir(path):
        raise UsageError(f"--record {path} is a directory",
                         "Name the file: --record /var/lib/gpuhost/storage-probe.json")
    return os.path.normpath(path)


def probe_storage(
    path: str = "",
    size_mib: int = DEFAULT_PROBE_MIB,
    unpack: bool = False,
    image_bytes: int = 0,
    client: EngineClient | None = None,
    record: str = "",
    unpack_mib: int = DEFAULT_UNPACK_PROBE_BYTES // MIB,
    progress: Callable[[str], None] | None = None,
    compressions: str = ",".join(COMPRESSIONS),
) -> StorageProbeReport:
    """Measure where `path` (default: Docker's data-root) lives and predict an image's unpack time."""
    if not MIN_PROBE_MIB <= size_mib <= MAX_PROBE_MIB:
        raise UsageError(f"--size-mib must be from 16 to {MAX_PROBE_MIB} (1 TiB), got {str(size_mib)[:40]}",
                         "Example: --size-mib 512")
    if record:
        record = check_record_path(record)
    chosen = parse_compressions(compressions)
    if not MIN_UNPACK_PROBE_MIB <= unpack_mib <= MAX_UNPACK_PROBE_MIB:
        raise UsageError(
            f"--unpack-mib must be from {MIN_UNPACK_PROBE_MIB} to {MAX_UNPACK_PROBE_MIB}, got {str(unpack_mib)[:40]}",
            "Example: --unpack-mib 1024",
        )
    data_root = ""
    info: dict[str, Any] = {}
    if client is not None and (unpack or not path):
        try:
            info = client.get("/info") or {}
            # where pulled layers land: data-root, or containerd's root with the containerd store
            data_root = str(info.get("DockerRootDir") or "")
            if image_store(info) == "containerd":
                data_root = collect_containerd().root_dir
        except EngineBadAnswer:
            raise  # something answers at the Docker address, but not Docker: exit 3, not "pass --path"
        except (EngineUnavailable, EnginePermissionDenied, EngineError, OSError) as exc:
            if not path:
                raise UsageError(
                    f"no path given and Docker's data-root is unknown: {exc}", "Pass --path DIR."
                ) from exc
    if not path:
        if client is None:
            raise UsageError("no path given and no Docker client to ask for its data-root")
        path = data_root
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
        # the rounds last until the data is on the device only where that device is the one
        # measured here: a daemon whose data-root is elsewhere (or on another machine) is
        # timed loading alone
        same_device = bool(data_root) and os.path.isdir(data_root) and (
            os.stat(data_root).st_dev == os.stat(path).st_dev
        )
        report.image_store = image_store(info)
        report.store_root = data_root
        try:
            version = client.get("/version") or {}
        except EngineError:
            version = {}
        decompressor = collect_decompressor(info, version, client.host)
        report.decompressor = decompressor.to_dict()
        report.unpack = measure_unpack(
            client,
            path if os.access(path, os.W_OK) else "/var/tmp",
            size_bytes=unpack_mib * MIB,
            data_root=data_root if same_device else "",
            write_mib_s=report.write.write_mib_s if same_device else None,
            progress=progress,
            daemon_pids=_daemon_pids(decompressor, client.host),
            compressions=chosen,
        )
    if image_bytes <= 0 and client is not None:
        found = largest_image(client)
        if found is not None and found[1] > 0:
            report.image_ref, image_bytes = found
    if image_bytes <= 0:
        report.image_ref, image_bytes = "reference 140 GB image", REFERENCE_IMAGE_BYTES
    report.image_bytes = image_bytes
    unpack_rate = (report.unpack.unpack_mib_s or None) if report.unpack else None
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


def measure_storage(**options: Any) -> StorageProbeReport:
    """probe_storage as both front ends run it: a directory that cannot be written is a SourceError (exit 3),
    one without room for the probe a UsageError (exit 2)."""
    try:
        return probe_storage(**options)
    except OSError as exc:
        where = options.get("path") or "data-root"
        raise SourceError(where, str(exc), "Run as root, on a writable filesystem.") from exc
    except ValueError as exc:  # too little room for the probe
        if isinstance(exc, UsageError):
            raise
        raise UsageError(str(exc), "Give a smaller --size-mib or a --path with more free space.") from exc


STORAGE_PROBE = Command(
    cli="storage probe",
    agent="storage-probe",
    summary="measure write throughput where data-root lives; predict unpack time",
    options=(
        Option("--path", "A directory on the filesystem to measure (default: where layers land: data-root, or "
               "containerd's root with the containerd image store).", kind="place", default=""),
        Option("--size-mib", "How much to write (deleted again).", kind="int", default=DEFAULT_PROBE_MIB,
               minimum=MIN_PROBE_MIB, maximum=MAX_PROBE_MIB, example="--size-mib 512"),
        Option("--unpack", "Also time `docker pull` of an image from a registry of the probe's own on 127.0.0.1, "
               "uncompressed, gzip and zstd, 3 rounds each, until the data is on the device, and of a layer of small "
               "files: Docker's own rate per layer compression and its cost per file, on its image store with its "
               "gzip decompressor (a few minutes). A daemon that cannot reach 127.0.0.1 here is timed loading an "
               "archive.", kind="flag", default=False),
        Option("--unpack-mib", "The --unpack image's size in MiB; smaller than 1024 measures a rate a large image "
               "will not reach.", kind="int", default=DEFAULT_UNPACK_PROBE_BYTES // MIB,
               minimum=MIN_UNPACK_PROBE_MIB, maximum=MAX_UNPACK_PROBE_MIB, example="--unpack-mib 1024"),
        Option("--compressions", "The layer compressions --unpack measures, comma-separated (the first one's rounds "
               "also pull the small-files image): `gzip` alone re-measures gzip after the decompressor changed.",
               default=",".join(COMPRESSIONS), metavar="LIST", example="--compressions gzip"),
        Option("--image-size", "Predict for this size (e.g. 140GB, 60GiB); default: the largest local image.",
               default="", metavar="SIZE", fronts=(CLI,)),
        Option("--image-bytes", "Predict for this size in bytes (default: the largest local image).", kind="int",
               default=0, minimum=0, maximum=MAX_IMAGE_BYTES, fronts=(AGENT,)),
        Option("--record", "Also write the result to this JSON file (an absolute path), for `gpuhost layers "
               "--probe-record` and `gpuhost check`; the role records /var/lib/gpuhost/storage-probe.json.",
               kind="place", default="", metavar="FILE"),
        DOCKER_HOST_OPTION,
        json_flag("the measurement"),
    ),
    parsers=(probe_storage,),
)
