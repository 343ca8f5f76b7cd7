#!/usr/bin/env python3
"""Image unpack time on a slow and a fast disk, against gpuhost's prediction, in one run.

Builds one local image (a busybox base made with `docker import`, plus layers of incompressible
data from os.urandom), then loads it with `docker load` into two private, short-lived dockerds:

  ebs    data-root on XFS over a loop device (direct I/O) backed by a file on the root disk:
         stands for an EBS volume
  nvme   data-root on XFS over a loop device backed by a file in /dev/shm (memory): stands for
         an instance-store NVMe disk

For each device: the raw throughput (O_DIRECT writes to the loop device before mkfs), gpuhost's
own probes on the mounted filesystem (gpuhost.storage.probe: the O_DIRECT write probe and the 1 GiB
`docker load` probe of Docker's processing rate, each round until the data is on the device, the
median of --probe-rounds rounds), then the timed load until the data is on the device (load +
syncfs). gpuhost predicts each time from its own probe figures
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
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._harness import (  # noqa: E402
    GIB,
    Target,
    add_bytes,
    both_disks,
    error_pct,
    finish_archive,
    import_base,
    loop_xfs,
    private_dockerd,
    random_layer,
    timed_until_durable,
)
from gpuhost.engine import EngineClient  # noqa: E402
from gpuhost.storage.probe import DEFAULT_UNPACK_PROBE_BYTES, measure_unpack, measure_write  # noqa: E402
from gpuhost.units import MIB  # noqa: E402
from gpuhost.unpack import default_write_mibs, predict_unpack_seconds  # noqa: E402

PREFIX = "gpuhost-storage-bench"
IMAGE_REF = f"{PREFIX}:big"


def log(message: str) -> None:
    sys.stderr.write(f"[unpack] {message}\n")
    sys.stderr.flush()


def build_image(shared: EngineClient, work: Path, image_bytes: int, layers: int) -> tuple[Path, int]:
    """The image as a `docker save` archive: the busybox base, then `layers` random layers.
    Returns the archive and the size of its layers (what the load unpacks)."""
    base_layer, base_config = import_base(shared, PREFIX)
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
        finish_archive(tar, base_config, diff_ids, history, names, IMAGE_REF)
    return archive, content


def docker_load(client: EngineClient, archive: Path) -> None:
    with open(archive, "rb") as fh:
        body = client.upload("/images/load", fh, archive.stat().st_size, params={"quiet": True}, timeout=1800.0)
    if b"errorDetail" in body:
        raise RuntimeError(f"docker load failed: {body[-500:]!r}")


def measure(target: Target, work: Path, archive: Path, image_bytes: int, args: argparse.Namespace) -> None:
    assert target.mount is not None
    probe = measure_write(str(target.mount), size_bytes=args.probe_mib * MIB)
    data_root = target.mount / "docker"
    with private_dockerd(target.name, data_root, work) as daemon:
        unpack = measure_unpack(daemon.client, str(work), size_bytes=args.unpack_probe_mib * MIB,
                                rounds=args.probe_rounds, compressions=("none",), data_root=str(data_root),
                                write_mib_s=probe.write_mib_s, pull=False)  # this bench times loads
        with timed_until_durable(target, [daemon.pid]) as timed:
            docker_load(daemon.client, archive)
        daemon.client.get(f"/images/{IMAGE_REF}/json")  # it is really there
    durable = timed.durable_seconds
    predicted = predict_unpack_seconds(image_bytes, probe.write_mib_s, unpack.unpack_mib_s)
    write_only = predict_unpack_seconds(image_bytes, probe.write_mib_s)
    default_class = "ebs" if target.name == "ebs" else "instance-store"
    by_default = predict_unpack_seconds(image_bytes, default_write_mibs(default_class))
    target.figures.update(
        {
            "probe_write_mib_s": probe.write_mib_s,
            "probe_unpack_mib_s": unpack.unpack_mib_s,
            "probe_unpack_rounds_mib_s": unpack.round_rates_mib_s.get("none", []),
            "probe_cpu_busy_pct": unpack.cpu_busy_pct,
            "load_s": round(timed.seconds, 2),
            "load_durable_s": round(durable, 2),
            "achieved_mib_s": round(image_bytes / MIB / durable, 1),
            "achieved_of_raw_pct": round(image_bytes / MIB / durable / target.figures["raw_write_mib_s"] * 100, 1),
            "predicted_s": round(predicted, 2),
            "prediction_error_pct": error_pct(predicted, durable),
            "write_only_error_pct": error_pct(write_only, durable),
            "class_default_error_pct": error_pct(by_default, durable),
            "dockerd_cpu_s": timed.dockerd_cpu_s,
            "system_busy_pct": timed.system_busy_pct,
            "steal_pct": timed.steal_pct,
            "device_written_of_image": round(timed.device_written_bytes / image_bytes, 2),
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
    need_memory = device_bytes + image_bytes + GIB  # the /dev/shm disk is allocated in full, the archive is cached
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
    parser.add_argument("--unpack-probe-mib", type=int, default=DEFAULT_UNPACK_PROBE_BYTES // MIB,
                        help="gpuhost's docker load probe per round")
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
            targets = both_disks(Path(args.work_dir), device_bytes)
            for target in targets:
                with loop_xfs(target, work, raw_probe_bytes=min(GIB, device_bytes // 4), prefix=PREFIX):
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
