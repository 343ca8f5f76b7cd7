#!/usr/bin/env python3
"""Image unpack time on a slow and a fast disk, against gpuhost's prediction, in one run.

Builds one local image (a busybox base made with `docker import`, plus layers of incompressible
data from os.urandom), then loads it with `docker load` into two private, short-lived dockerds:

  ebs    data-root on XFS over a loop device (direct I/O) backed by a file on the root disk:
         stands for an EBS volume
  nvme   data-root on XFS over a loop device backed by a file in /dev/shm (memory): stands for
         an instance-store NVMe disk

For each device: the raw throughput (O_DIRECT writes to the loop device before mkfs), gpuhost's
own probes on the mounted filesystem (gpuhost.storage.probe: the O_DIRECT write probe and the small
`docker load` probe of Docker's processing rate, the median of --probe-rounds rounds), then the
timed load until the data is on the device (load + syncfs). gpuhost predicts each time from its own probe figures
(gpuhost.unpack.predict_unpack_seconds); the naive predictions beside it are the write-only model
with the documented per-class defaults and with the measured write rate alone.

One JSON line: both times, their ratio, achieved vs raw throughput, each prediction's error (the
median over --repeat runs when more than one). Target: gpuhost's prediction within 25% on both.

The shared dockerd only imports the tiny base (removed again); each device gets its own dockerd
(own data-root, exec-root, pidfile, socket and network namespace, no bridge). Everything the run creates
(loop devices, files in --work-dir and /dev/shm, mounts, daemons) is removed, also on errors.
Run as root:  .venv/bin/python bench/unpack.py [--image-gib 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import mmap
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpuhost.engine import EngineClient, EngineUnavailable  # noqa: E402
from gpuhost.storage.probe import measure_unpack, measure_write  # noqa: E402
from gpuhost.units import MIB  # noqa: E402
from gpuhost.unpack import default_write_mibs, predict_unpack_seconds  # noqa: E402

GIB = 1024 * MIB
PREFIX = "gpuhost-storage-bench"
IMAGE_REF = f"{PREFIX}:big"


def log(message: str) -> None:
    sys.stderr.write(f"[unpack] {message}\n")
    sys.stderr.flush()


def run(*command: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


# --- the image ------------------------------------------------------------------------------


def busybox_rootfs() -> bytes:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise SystemExit("bench/unpack.py needs busybox (apt-get install busybox-static)")
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


def import_base(shared: EngineClient) -> tuple[bytes, dict[str, Any]]:
    """`docker import` the busybox rootfs on the shared daemon, save it, remove it again."""
    ref = f"{PREFIX}:base-{os.getpid()}"
    rootfs = busybox_rootfs()
    shared.upload(
        "/images/create",
        io.BytesIO(rootfs),
        len(rootfs),
        params={"fromSrc": "-", "repo": PREFIX, "tag": f"base-{os.getpid()}"},
        timeout=120.0,
    )
    try:
        saved = b"".join(shared.stream(f"/images/{ref}/get", timeout=120.0))
    finally:
        shared.request("DELETE", f"/images/{ref}", params={"force": True})
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
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 * MIB), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_image(shared: EngineClient, work: Path, image_bytes: int, layers: int) -> tuple[Path, int]:
    """The image as a `docker save` archive: the busybox base, then `layers` random layers.
    Returns the archive and the size of its layers (what the load unpacks)."""
    base_layer, base_config = import_base(shared)
    names = ["base/layer.tar"]
    diff_ids = list(base_config["rootfs"]["diff_ids"])
    history = list(base_config.get("history") or [])
    archive = work / "image.tar"
    content = len(base_layer)
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, names[0], base_layer)
        for index in range(layers):
            layer_path = work / f"layer{index}.tar"
            diff_ids.append(random_layer(layer_path, index, image_bytes // layers, files=4))
            history.append({"created_by": f"COPY model shard {index} (incompressible) /data/"})
            names.append(f"shard{index:02d}/layer.tar")
            tar.add(layer_path, arcname=names[-1])
            content += layer_path.stat().st_size
            layer_path.unlink()
        config = dict(base_config, rootfs={"type": "layers", "diff_ids": diff_ids}, history=history)
        config_bytes = json.dumps(config).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        add_bytes(tar, config_name, config_bytes)
        add_bytes(tar, "manifest.json", json.dumps([{"Config": config_name, "RepoTags": [IMAGE_REF],
                                                     "Layers": names}]).encode())
    return archive, content


# --- devices and daemons --------------------------------------------------------------------


@dataclass
class Target:
    name: str
    backing_dir: Path
    size_bytes: int
    direct_io: bool
    loop: str = ""
    mount: Path | None = None
    figures: dict[str, Any] = field(default_factory=dict)


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


@contextlib.contextmanager
def loop_xfs(target: Target, work: Path, raw_probe_bytes: int) -> Iterator[Target]:
    fd, name = tempfile.mkstemp(prefix=f"{PREFIX}-{target.name}-", suffix=".img", dir=target.backing_dir)
    os.close(fd)
    backing = Path(name)
    try:
        os.truncate(backing, target.size_bytes)
        args = ["losetup", "--find", "--show"] + (["--direct-io=on"] if target.direct_io else [])
        target.loop = run(*args, str(backing))
        try:
            target.figures["raw_write_mib_s"] = round(raw_write_mibs(target.loop, raw_probe_bytes), 1)
            run("mkfs.xfs", "-q", "-f", target.loop)
            target.mount = work / f"mnt-{target.name}"
            target.mount.mkdir(exist_ok=True)
            run("mount", "-o", "noatime", target.loop, str(target.mount))
            try:
                yield target
            finally:
                subprocess.run(["umount", "-R", str(target.mount)], capture_output=True, check=False)
        finally:
            subprocess.run(["losetup", "-d", target.loop], capture_output=True, check=False)
    finally:
        backing.unlink(missing_ok=True)


@dataclass
class Daemon:
    client: EngineClient
    pid: int


@contextlib.contextmanager
def private_dockerd(name: str, data_root: Path, log_dir: Path) -> Iterator[Daemon]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"gh-sb-{name}-", dir="/run"))
    socket = run_dir / "docker.sock"
    config = run_dir / "daemon.json"
    config.write_text("{}")
    log_path = log_dir / f"dockerd-{name}.log"
    # its own network namespace: a dockerd with --bridge none deletes the host's docker0
    command = [
        "unshare", "--net", "--",
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
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    client = EngineClient(f"unix://{socket}", timeout=600.0)
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
        yield Daemon(client, process.pid)
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


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children (dockerd re-execs itself to apply layers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def system_busy() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def docker_load(client: EngineClient, archive: Path) -> None:
    with open(archive, "rb") as fh:
        body = client.upload("/images/load", fh, archive.stat().st_size, params={"quiet": True}, timeout=1800.0)
    if b"errorDetail" in body:
        raise RuntimeError(f"docker load failed: {body[-500:]!r}")


def error_pct(predicted: float, measured: float) -> float:
    return round((predicted - measured) / measured * 100, 1)


def measure(target: Target, work: Path, archive: Path, image_bytes: int, args: argparse.Namespace) -> None:
    assert target.mount is not None
    probe = measure_write(str(target.mount), size_bytes=args.probe_mib * MIB)
    data_root = target.mount / "docker"
    with private_dockerd(target.name, data_root, work) as daemon:
        unpack = measure_unpack(daemon.client, str(work), size_bytes=args.unpack_probe_mib * MIB,
                                rounds=args.probe_rounds, compressions=("none",))
        cpu_before, busy_before = tree_cpu_seconds(daemon.pid), system_busy()
        start = time.perf_counter()
        docker_load(daemon.client, archive)
        loaded = time.perf_counter() - start
        run("sync", "-f", str(target.mount))
        durable = time.perf_counter() - start
        cpu_after, busy_after = tree_cpu_seconds(daemon.pid), system_busy()
        daemon.client.get(f"/images/{IMAGE_REF}/json")  # it is really there
    predicted = predict_unpack_seconds(image_bytes, probe.write_mib_s, unpack.unpack_mib_s)
    write_only = predict_unpack_seconds(image_bytes, probe.write_mib_s)
    default_class = "ebs" if target.name == "ebs" else "instance-store"
    by_default = predict_unpack_seconds(image_bytes, default_write_mibs(default_class))
    target.figures.update(
        {
            "probe_write_mib_s": probe.write_mib_s,
            "probe_unpack_mib_s": unpack.unpack_mib_s,
            "probe_unpack_rounds_mib_s": unpack.round_rates_mib_s.get("none", []),
            "load_s": round(loaded, 2),
            "load_durable_s": round(durable, 2),
            "achieved_mib_s": round(image_bytes / MIB / durable, 1),
            "achieved_of_raw_pct": round(image_bytes / MIB / durable / target.figures["raw_write_mib_s"] * 100, 1),
            "predicted_s": round(predicted, 2),
            "prediction_error_pct": error_pct(predicted, durable),
            "write_only_error_pct": error_pct(write_only, durable),
            "class_default_error_pct": error_pct(by_default, durable),
            "dockerd_cpu_s": round(cpu_after - cpu_before, 2),
            "system_busy_pct": round(
                (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]) * 100, 1
            ),
        }
    )


def summarise(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The median of every figure over the runs (the figures themselves when there is one run)."""
    summary: dict[str, Any] = {}
    for name in ("ebs", "nvme"):
        figures: dict[str, Any] = {}
        for key, value in runs[0][name].items():
            values = [r[name][key] for r in runs]
            figures[key] = round(statistics.median(values), 2) if isinstance(value, (int, float)) else value
        if len(runs) > 1:
            figures["prediction_error_pct_runs"] = [r[name]["prediction_error_pct"] for r in runs]
        summary[name] = figures
    return summary


def preflight(args: argparse.Namespace, device_bytes: int, image_bytes: int) -> str:
    if os.geteuid() != 0:
        return "run as root (loop devices, mounts, dockerd)"
    for tool in ("losetup", "mkfs.xfs", "dockerd", "sync"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    shm = shutil.disk_usage("/dev/shm")
    disk = shutil.disk_usage(args.work_dir)
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    need_memory = image_bytes * 2 + GIB  # the /dev/shm disk fills with the archive's copy and the layers
    if shm.free < device_bytes or available < need_memory:
        return (f"/dev/shm has {shm.free / GIB:.1f} GiB free and {available / GIB:.1f} GiB of memory is available; "
                f"the memory-backed disk needs {device_bytes / GIB:.1f} GiB of room and {need_memory / GIB:.1f} GiB")
    if disk.free < device_bytes + image_bytes * 1.2:
        return f"{args.work_dir} has {disk.free / GIB:.1f} GiB free; needs {(device_bytes + image_bytes) / GIB:.1f}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-gib", type=float, default=2.0, help="incompressible layer data (default 2 GiB)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--probe-mib", type=int, default=512, help="gpuhost's write probe per device")
    parser.add_argument("--unpack-probe-mib", type=int, default=256, help="gpuhost's docker load probe per round")
    parser.add_argument("--probe-rounds", type=int, default=3, help="docker load probe rounds; the median counts")
    parser.add_argument("--repeat", type=int, default=1, help="load on both devices this many times; medians")
    parser.add_argument("--work-dir", default="/var/tmp", help="root-disk directory: the archive and the ebs file")
    args = parser.parse_args()
    image_bytes = int(args.image_gib * GIB)
    device_bytes = int(image_bytes * 2.6) + GIB  # docker load unpacks the archive into data-root/tmp first
    problem = preflight(args, device_bytes, image_bytes)
    if problem:
        print(json.dumps({"bench": "unpack", "error": problem}))
        return 2
    shared = EngineClient(timeout=120.0)
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir=args.work_dir))
    result: dict[str, Any] = {"bench": "unpack"}
    try:
        log(f"building a {args.image_gib:g} GiB image in {work}")
        start = time.perf_counter()
        archive, content = build_image(shared, work, image_bytes, args.layers)
        result.update(
            image_bytes=content, image_layers=args.layers + 1, image_build_s=round(time.perf_counter() - start, 1)
        )
        runs = []
        for number in range(args.repeat):
            targets = [
                Target("ebs", Path(args.work_dir), device_bytes, direct_io=True),
                Target("nvme", Path("/dev/shm"), device_bytes, direct_io=False),
            ]
            for target in targets:
                with loop_xfs(target, work, raw_probe_bytes=min(GIB, device_bytes // 4)):
                    measure(target, work, archive, content, args)
                log(f"run {number + 1} {target.name}: {json.dumps(target.figures)}")
            runs.append({t.name: t.figures for t in targets})
        result.update(summarise(runs))
        result["runs"] = args.repeat
        result["ratio_ebs_over_nvme"] = round(result["ebs"]["load_durable_s"] / result["nvme"]["load_durable_s"], 2)
        result["within_25pct"] = all(abs(result[n]["prediction_error_pct"]) <= 25 for n in ("ebs", "nvme"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
