"""What bench/unpack.py and bench/pull.py share: the test image's parts, loop disks that stand
for an EBS volume and an instance-store disk, private dockerds, and the figures taken around a
timed step (dockerd's CPU-seconds, the machine's busy share, the bytes the device really wrote).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuhost.engine import EngineClient, EngineUnavailable
from gpuhost.storage.probe_registry import file_digest
from gpuhost.units import MIB

GIB = 1024 * MIB


def run(*command: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def error_pct(predicted: float, measured: float) -> float:
    return round((predicted - measured) / measured * 100, 1)


# --- the image's parts ----------------------------------------------------------------------


def busybox_rootfs() -> bytes:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise SystemExit("the bench needs busybox (apt-get install busybox-static)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "data"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "ls", "cat", "du"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def import_base(shared: EngineClient, repository: str) -> tuple[bytes, dict[str, Any]]:
    """`docker import` the busybox rootfs on the shared daemon, save it, remove it again."""
    tag = f"base-{os.getpid()}"
    rootfs = busybox_rootfs()
    shared.upload(
        "/images/create",
        io.BytesIO(rootfs),
        len(rootfs),
        params={"fromSrc": "-", "repo": repository, "tag": tag},
        timeout=120.0,
    )
    try:
        saved = b"".join(shared.stream(f"/images/{repository}:{tag}/get", timeout=120.0))
    finally:
        shared.request("DELETE", f"/images/{repository}:{tag}", params={"force": True})
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        layer = tar.extractfile(manifest["Layers"][0]).read()  # type: ignore[union-attr]
    return layer, config


class RandomReader(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left, 4 * MIB)
        buffer[:count] = os.urandom(count)
        self.left -= count
        return count


def random_layer(path: Path, index: int, layer_bytes: int, files: int) -> str:
    """A layer tar of `files` files of incompressible data under /data; returns its diff id."""
    per_file = layer_bytes // files
    with tarfile.open(path, mode="w") as tar:
        for number in range(files):
            info = tarfile.TarInfo(f"data/shard{index:02d}-{number:02d}.bin")
            info.size, info.mode, info.mtime = per_file, 0o644, int(time.time())
            tar.addfile(info, io.BufferedReader(RandomReader(per_file), 4 * MIB))
    return file_digest(str(path))


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def finish_archive(tar: tarfile.TarFile, base_config: dict[str, Any], diff_ids: list[str],
                   history: list[dict[str, str]], names: list[str], ref: str) -> None:
    """The config and manifest.json of a `docker save` archive whose layers are in `tar`."""
    config = dict(base_config, rootfs={"type": "layers", "diff_ids": diff_ids}, history=history)
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    add_bytes(tar, config_name, config_bytes)
    add_bytes(tar, "manifest.json", json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": names}]).encode())


# --- disks ----------------------------------------------------------------------------------


@dataclass
class Target:
    """A loop disk: `ebs` over a file on the root disk with direct I/O, `nvme` over /dev/shm."""

    name: str
    backing_dir: Path
    size_bytes: int
    direct_io: bool
    loop: str = ""
    mount: Path | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def both_disks(work_dir: Path, size_bytes: int) -> tuple[Target, Target]:
    return (Target("ebs", work_dir, size_bytes, direct_io=True),
            Target("nvme", Path("/dev/shm"), size_bytes, direct_io=False))


def raw_write_mibs(device: str, size_bytes: int) -> float:
    """O_DIRECT sequential writes straight to the block device (before mkfs)."""
    block = 8 * MIB
    buffer = mmap.mmap(-1, block)
    buffer[:] = os.urandom(block)
    fd = os.open(device, os.O_WRONLY | getattr(os, "O_DIRECT", 0))
    try:
        start = time.perf_counter()
        written = 0
        while written < size_bytes:
            written += os.write(fd, buffer)
        os.fdatasync(fd)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        buffer.close()
    return written / MIB / seconds


def device_written_bytes(device: str) -> int:
    """Bytes the block device has written since it was set up (/sys/block/X/stat)."""
    fields = Path(f"/sys/block/{Path(device).name}/stat").read_text().split()
    return int(fields[6]) * 512


@contextlib.contextmanager
def dirty_limit(device: str, limit_bytes: int) -> Iterator[None]:
    """At most `limit_bytes` of dirty pages for `device`, strictly (its BDI's max_bytes and
    strict_limit), restored afterwards: writers to it are held back and the device writes all
    along, as for an image many times larger than the page cache."""
    bdi = Path(f"/sys/block/{Path(device).name}/bdi")
    saved = {name: (bdi / name).read_text().strip() for name in ("max_ratio", "strict_limit")}
    try:
        (bdi / "max_bytes").write_text(str(limit_bytes))
        (bdi / "strict_limit").write_text("1")
        yield
    finally:
        for name, value in saved.items():
            with contextlib.suppress(OSError):
                (bdi / name).write_text(value)


@contextlib.contextmanager
def loop_xfs(target: Target, work: Path, raw_probe_bytes: int, prefix: str,
             dirty_limit_bytes: int | None = None) -> Iterator[Target]:
    fd, name = tempfile.mkstemp(prefix=f"{prefix}-{target.name}-", suffix=".img", dir=target.backing_dir)
    backing = Path(name)
    try:
        # every block allocated before the first write, as a real disk's are: a sparse backing
        # file makes the first write to each block pay the host's allocation (and, in /dev/shm,
        # zeroing a page), a cost the probes, which rewrite the same blocks, would not see
        try:
            os.posix_fallocate(fd, 0, target.size_bytes)
        finally:
            os.close(fd)
        args = ["losetup", "--find", "--show"] + (["--direct-io=on"] if target.direct_io else [])
        target.loop = run(*args, str(backing))
        try:
            target.figures["raw_write_mib_s"] = round(raw_write_mibs(target.loop, raw_probe_bytes), 1)
            run("mkfs.xfs", "-q", "-f", target.loop)
            target.mount = work / f"mnt-{target.name}"
            target.mount.mkdir(exist_ok=True)
            run("mount", "-o", "noatime", target.loop, str(target.mount))
            try:
                with contextlib.ExitStack() as stack:
                    if dirty_limit_bytes:
                        stack.enter_context(dirty_limit(target.loop, dirty_limit_bytes))
                        target.figures["dirty_limit_bytes"] = dirty_limit_bytes
                    yield target
            finally:
                subprocess.run(["umount", "-R", str(target.mount)], capture_output=True, check=False)
        finally:
            subprocess.run(["losetup", "-d", target.loop], capture_output=True, check=False)
    finally:
        backing.unlink(missing_ok=True)


# --- daemons --------------------------------------------------------------------------------


def _netns(netns_pid: int | None, command: list[str]) -> list[str]:
    """`command`, run inside the network namespace of `netns_pid`, or in a new one of its own
    (a dockerd with --bridge none deletes the host's docker0)."""
    if netns_pid is None:
        return ["unshare", "--net", "--", *command]
    return ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *command]


@contextlib.contextmanager
def network_namespace() -> Iterator[int]:
    """A network namespace with only loopback, held by a sleeping process; yields its pid."""
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "7200"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise RuntimeError("unshare --net did not start")
            time.sleep(0.05)
        run(*_netns(holder.pid, ["ip", "link", "set", "lo", "up"]))
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=10)


@dataclass
class Daemon:
    client: EngineClient
    pid: int  # dockerd's own: unshare and nsenter exec it
    host: str


@contextlib.contextmanager
def private_dockerd(name: str, data_root: Path, log_dir: Path, *, netns_pid: int | None = None,
                    daemon_json: dict[str, Any] | None = None,
                    environment: dict[str, str] | None = None) -> Iterator[Daemon]:
    """A dockerd of its own (data-root, exec-root, pidfile, socket, network namespace, no bridge),
    stopped and its data-root unmounted afterwards."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"gh-b-{name[:8]}-", dir="/run"))
    socket = run_dir / "docker.sock"
    config = run_dir / "daemon.json"
    config.write_text(json.dumps(daemon_json or {}))
    command = _netns(netns_pid, [
        shutil.which("dockerd") or "/usr/sbin/dockerd",
        "--config-file", str(config),
        "--data-root", str(data_root),
        "--exec-root", str(run_dir / "exec"),
        "--pidfile", str(run_dir / "docker.pid"),
        "-H", f"unix://{socket}",
        "--bridge", "none",
        "--iptables=false",
        "--ip-masq=false",
        "--storage-driver", "overlay2",
    ])
    log_path = log_dir / f"dockerd-{name}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=environment)
    client = EngineClient(f"unix://{socket}", timeout=900.0)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"dockerd {name} exited: {log_path.read_text()[-1500:]}")
            with contextlib.suppress(EngineUnavailable, OSError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd {name} did not answer within 60 s")
            time.sleep(0.2)
        yield Daemon(client, process.pid, f"unix://{socket}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        subprocess.run(["umount", "-R", str(data_root)], capture_output=True, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


# --- figures around a timed step ------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children (dockerd re-execs itself to apply layers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def system_busy() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of all CPUs; steal is time the hypervisor gave elsewhere."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, values[7], sum(values)


def fs_used_bytes(path: Path) -> int:
    """Bytes in use on the filesystem that holds `path`."""
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@dataclass
class Timed:
    """Seconds until a step's data is on the device (the step, then syncfs), and what it cost."""

    seconds: float = 0.0
    durable_seconds: float = 0.0
    dockerd_cpu_s: float = 0.0
    system_busy_pct: float = 0.0
    steal_pct: float = 0.0
    device_written_bytes: int = 0
    # what the step left on the disk (used bytes after it, less before it)
    disk_used_bytes: int = 0
    load_avg_1m: float = 0.0


@contextlib.contextmanager
def timed_until_durable(target: Target, pids: list[int]) -> Iterator[Timed]:
    """Time the block until its data is on `target`'s device; the CPU time of `pids` (the
    daemons, with their reaped children) and of the whole machine while it ran."""
    assert target.mount is not None
    timed = Timed()
    written_before = device_written_bytes(target.loop)
    used_before = fs_used_bytes(target.mount)
    cpu_before, busy_before = sum(tree_cpu_seconds(p) for p in pids), system_busy()
    start = time.perf_counter()
    yield timed
    timed.seconds = time.perf_counter() - start
    run("sync", "-f", str(target.mount))
    timed.durable_seconds = time.perf_counter() - start
    cpu_after, busy_after = sum(tree_cpu_seconds(p) for p in pids), system_busy()
    timed.dockerd_cpu_s = round(cpu_after - cpu_before, 2)
    ticks = max(1, busy_after[2] - busy_before[2])
    timed.system_busy_pct = round((busy_after[0] - busy_before[0]) / ticks * 100, 1)
    timed.steal_pct = round((busy_after[1] - busy_before[1]) / ticks * 100, 1)
    timed.device_written_bytes = device_written_bytes(target.loop) - written_before
    timed.disk_used_bytes = fs_used_bytes(target.mount) - used_before
    timed.load_avg_1m = round(os.getloadavg()[0], 2)
