#!/usr/bin/env python3
"""`docker pull` from a real registry on loopback onto a slow and a fast disk, against gpuhost's
prediction, for each layer compression and daemon setting, in one run.

The image: a busybox base, layers of incompressible data (weights) and layers of real files
from /usr (a Python environment's kind of content), `--image-gib` in all, three quarters weights.
It is pushed to Debian's `docker-registry` (CNCF distribution 2.8) three ways:

  gzip   skopeo copy (the default compression of every registry push)
  zstd   skopeo copy --format oci --dest-compress-format zstd
  none   the layers as they are (tests/support/registry.py; skopeo and docker push always compress)

Disks as in bench/unpack.py: `ebs` an XFS loop device (direct I/O) over a file on the root disk,
`nvme` one over a file in /dev/shm. For each disk, pulls by a private dockerd with its data-root
there:

  gzip-pigz      gzip layers, unpigz on dockerd's PATH, max-concurrent-downloads 3
  gzip-nopigz    gzip layers, MOBY_DISABLE_PIGZ=1 (Go's gzip), max-concurrent-downloads 3
  gzip-pigz-mcd10  as gzip-pigz with max-concurrent-downloads 10
  none           uncompressed layers
  zstd           zstd layers (Docker before 23 refuses them: reported, not timed again)

Each setting is pulled --pulls times (default 3) by one daemon, the image removed between pulls,
and the median pull counts. Each pull is timed until the data is on the device (pull + syncfs),
with dockerd's CPU-seconds (it and its reaped children: unpigz, the untar re-exec), achieved vs the
raw device write, the CPU time the hypervisor gave elsewhere (steal), and gpuhost's prediction
(gpuhost.unpack.predict_pull from its own probes: the O_DIRECT write probe, `measure_unpack`'s
per-compression rates (1 GiB loads until the data is on the device, median of three rounds, run
under the same daemon setting) and the CPU share they kept busy, and the rate at which one
connection downloads, verifies and stores the largest blob on that disk) and its error. One JSON
line. Target: every prediction within 25%.

With --subject real the image is the real ComfyUI the tests run (gpuhost-comfyui:0.3.64, about 6.7 GB
in a Debian base, a Python environment with PyPI's CUDA torch and the ComfyUI source: built by
scripts/build-comfyui-image), `docker save`d and pushed the same ways. It is three times the default
synthetic image: `--disks ebs --only gzip-pigz` keeps a run within the memory and disk of a 2-core, 24
GiB machine (the nvme disk lives in /dev/shm).

The registry, skopeo and every dockerd share one private network namespace (loopback only): a
dockerd there cannot touch the host's docker0, and the registry is never on a bridge address.
Everything the run creates is removed, also on errors. Run as root:
  .venv/bin/python bench/pull.py [--image-gib 2] [--repeat 1] [--only gzip-pigz,none] [--disks ebs]
  .venv/bin/python bench/pull.py --subject real --disks ebs --only gzip-pigz
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._harness import (  # noqa: E402
    GIB,
    Daemon,
    Target,
    add_bytes,
    both_disks,
    error_pct,
    finish_archive,
    import_base,
    loop_xfs,
    network_namespace,
    private_dockerd,
    random_layer,
    run,
    sha256_file,
    timed_until_durable,
)
from gpuhost.engine import EngineClient  # noqa: E402
from gpuhost.storage.probe import (  # noqa: E402
    DEFAULT_UNPACK_PROBE_BYTES,
    UnpackProbeResult,
    measure_unpack,
    measure_write,
)
from gpuhost.units import MIB  # noqa: E402
from gpuhost.unpack import PullLayer, compression_of, predict_pull  # noqa: E402
from tests.support.registry import LocalRegistry, in_netns  # noqa: E402

PREFIX = "gpuhost-pull-bench"
WEIGHTS_FRACTION = 0.75


@dataclass(frozen=True)
class Setting:
    name: str
    tag: str  # which push of the image
    pigz: bool
    max_concurrent_downloads: int


SETTINGS = (
    Setting("gzip-pigz", "gzip", True, 3),
    Setting("gzip-nopigz", "gzip", False, 3),
    Setting("gzip-pigz-mcd10", "gzip", True, 10),
    Setting("none", "none", True, 3),
    Setting("zstd", "zstd", True, 3),
)


def log(message: str) -> None:
    sys.stderr.write(f"[pull] {message}\n")
    sys.stderr.flush()


# --- the image ------------------------------------------------------------------------------


def files_layer(path: Path, size: int, skip: int) -> str:
    """A layer tar of real files from /usr (after the first `skip` bytes of them), about `size`
    bytes; returns its diff id."""
    taken = seen = 0
    with tarfile.open(path, "w") as tar:
        for directory, _, names in os.walk("/usr"):
            for name in sorted(names):
                full = os.path.join(directory, name)
                if not os.path.isfile(full) or os.path.islink(full):
                    continue
                length = os.path.getsize(full)
                seen += length
                if seen <= skip:
                    continue
                with contextlib.suppress(OSError):
                    tar.add(full, arcname=f"opt/env{full}", recursive=False)
                    taken += length
                if taken >= size:
                    break
            if taken >= size:
                break
    return sha256_file(path)


def build_image(shared: EngineClient, work: Path, image_bytes: int, weight_layers: int,
                file_layers: int) -> tuple[Path, list[int]]:
    """A `docker save` archive; returns it and every layer's unpacked size, base first."""
    base_layer, base_config = import_base(shared, PREFIX)
    names, sizes = ["base/layer.tar"], [len(base_layer)]
    diff_ids = list(base_config["rootfs"]["diff_ids"])
    history = list(base_config.get("history") or [])
    archive = work / "image.tar"
    weights = int(image_bytes * WEIGHTS_FRACTION)
    files = image_bytes - weights
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, names[0], base_layer)
        for index in range(file_layers):
            layer_path = work / f"files{index}.tar"
            diff_ids.append(files_layer(layer_path, files // file_layers, skip=index * (files // file_layers)))
            history.append({"created_by": f"RUN pip install ... (environment part {index})"})
            names.append(f"files{index:02d}/layer.tar")
            tar.add(layer_path, arcname=names[-1])
            sizes.append(layer_path.stat().st_size)
            layer_path.unlink()
        for index in range(weight_layers):
            layer_path = work / f"weights{index}.tar"
            diff_ids.append(random_layer(layer_path, index, weights // weight_layers, files=2))
            history.append({"created_by": f"COPY model shard {index} (incompressible) /data/"})
            names.append(f"weights{index:02d}/layer.tar")
            tar.add(layer_path, arcname=names[-1])
            sizes.append(layer_path.stat().st_size)
            layer_path.unlink()
        finish_archive(tar, base_config, diff_ids, history, names, f"{PREFIX}:big")
    return archive, sizes


def real_image(work: Path) -> tuple[Path, list[int]]:
    """`docker save` of the real ComfyUI image (built first when it is not up to date); returns the
    archive and every layer's unpacked size, base first."""
    from tests.support.comfyui_real import IMAGE, ensure_image

    ensure_image()
    archive = work / "image.tar"
    run("docker", "save", "-o", str(archive), IMAGE)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        sizes = [tar.getmember(name).size for name in manifest["Layers"]]
    return archive, sizes


def subject_bytes(args: argparse.Namespace) -> int:
    if args.subject == "real":
        from tests.support.comfyui_real import IMAGE

        return int(run("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE) or 0) or int(7 * GIB)
    return int(args.image_gib * GIB)


# --- the daemons ----------------------------------------------------------------------------


@contextlib.contextmanager
def dockerd_for(netns: int, name: str, data_root: Path, log_dir: Path, setting: Setting) -> Iterator[Daemon]:
    environment = dict(os.environ)
    if not setting.pigz:
        environment["MOBY_DISABLE_PIGZ"] = "1"
    elif shutil.which("unpigz") is None:
        raise RuntimeError("unpigz is not on PATH (apt-get install pigz)")
    with private_dockerd(name, data_root, log_dir, netns_pid=netns, environment=environment,
                         daemon_json={"max-concurrent-downloads": setting.max_concurrent_downloads}) as daemon:
        yield daemon


def pull(daemon: Daemon, image: str, tag: str) -> None:
    """`docker pull` through the daemon's socket (the CLI reads the progress stream to its end)."""
    proc = subprocess.run(["docker", "-H", daemon.host, "pull", "-q", f"{image}:{tag}"], capture_output=True,
                          text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"docker pull failed: {proc.stderr.strip()[-400:]}")


# --- the run --------------------------------------------------------------------------------


def manifest_layers(registry: LocalRegistry, repository: str, tag: str,
                    sizes: list[int]) -> tuple[list[PullLayer], tuple[str, int]]:
    """The pushed image's layers for the prediction, and its largest blob (digest and size)."""
    raw = run(*in_netns(registry.netns_pid, ["skopeo", "inspect", "--raw", "--tls-verify=false",
                                             f"docker://{registry.address}/{repository}:{tag}"]))
    layers = json.loads(raw)["layers"]
    largest = max(layers, key=lambda layer: int(layer["size"]))
    return [PullLayer(compression_of(layer["mediaType"]), int(layer["size"]), size)
            for layer, size in zip(layers, sizes)], (largest["digest"], int(largest["size"]))


def download_mib_s(registry: LocalRegistry, repository: str, digest: str, size: int, directory: Path,
                   rounds: int = 3) -> float:
    """How fast one connection fetches a blob from the registry the way dockerd does before it
    extracts anything: received, its digest verified, stored in the data-root disk (curl | tee |
    sha256sum, the median of `rounds`; the copy is deleted). The figure a user would pass to
    `gpuhost layers --download-mibs`."""
    url = f"http://{registry.address}/v2/{repository}/blobs/{digest}"
    target = directory / "download-probe"
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        output = run(*in_netns(registry.netns_pid, [
            "bash", "-c", 'set -o pipefail; curl -sSf --max-time 300 "$1" | tee "$2" | sha256sum',
            "download", url, str(target)]))
        seconds = time.perf_counter() - start
        target.unlink(missing_ok=True)
        if not digest.endswith(output.split()[0]):
            raise RuntimeError(f"{url}: the blob's digest is {output.split()[0]}")
        rates.append(size / MIB / seconds)
    return round(statistics.median(rates), 1)


def measure_disk(target: Target, netns: int, registry: LocalRegistry, pushed: dict[str, list[PullLayer]],
                 blobs: dict[str, tuple[str, int]], work: Path, args: argparse.Namespace, settings: list[Setting],
                 refused: dict[str, str]) -> dict[str, Any]:
    assert target.mount is not None
    figures: dict[str, Any] = {"raw_write_mib_s": target.figures["raw_write_mib_s"]}
    write = measure_write(str(target.mount), size_bytes=args.probe_mib * MIB)
    figures["probe_write_mib_s"] = write.write_mib_s
    downloads = {tag: download_mib_s(registry, f"bench-{tag}", *blobs[tag], target.mount) for tag in pushed}
    figures["download_mib_s"] = downloads
    data_root = target.mount / "docker"
    probes: dict[bool, UnpackProbeResult] = {}
    for setting in settings:
        if setting.tag in refused or setting.tag not in pushed:
            continue
        layers = pushed[setting.tag]
        size = sum(layer.size_bytes for layer in layers)
        if setting.pigz not in probes:
            # the probe runs in a daemon of its own, as `gpuhost storage probe` runs apart from
            # the pulls it predicts; every pull starts on a fresh daemon
            which = "pigz" if setting.pigz else "nopigz"
            with dockerd_for(netns, f"{target.name}-probe-{which}", data_root, work, setting) as daemon:
                probe = measure_unpack(daemon.client, str(work), size_bytes=args.unpack_probe_mib * MIB,
                                       rounds=args.probe_rounds, compressions=("none", "gzip"),
                                       data_root=str(data_root), write_mib_s=write.write_mib_s)
            probes[setting.pigz] = probe
            figures[f"probe_rounds_mib_s_{which}"] = probe.round_rates_mib_s
            figures[f"probe_rates_mib_s_{which}"] = probe.rates_mib_s
            figures[f"probe_cpu_busy_pct_{which}"] = probe.cpu_busy_pct
        with dockerd_for(netns, f"{target.name}-{setting.name}", data_root, work, setting) as daemon:
            pulls = []
            try:
                for _ in range(args.pulls):
                    with timed_until_durable(target, daemon) as timed:
                        pull(daemon, f"{registry.address}/bench-{setting.tag}", setting.tag)
                    pulls.append(timed)
                    daemon.client.request("DELETE", f"/images/{registry.address}/bench-{setting.tag}:{setting.tag}",
                                          params={"force": True})
                    run("sync", "-f", str(target.mount))
            except RuntimeError as exc:
                refused[setting.tag] = str(exc)[-300:]
                log(f"{target.name} {setting.name}: {exc}")
                continue
        # the median pull: one disturbed by the rest of the machine cannot move the figures
        timed = sorted(pulls, key=lambda t: t.durable_seconds)[len(pulls) // 2]
        probe = probes[setting.pigz]
        prediction = predict_pull(layers, write.write_mib_s, probe.rates_mib_s, downloads[setting.tag],
                                  probe.cpu_busy_pct)
        durable = timed.durable_seconds
        figures[setting.name] = {
            "pull_s": round(timed.seconds, 2),
            "pull_durable_s": round(durable, 2),
            "mib_s": round(size / MIB / durable, 1),
            "achieved_of_raw_pct": round(size / MIB / durable / target.figures["raw_write_mib_s"] * 100, 1),
            "dockerd_cpu_s": timed.dockerd_cpu_s,
            "system_busy_pct": timed.system_busy_pct,
            "steal_pct": timed.steal_pct,
            "device_written_of_image": round(timed.device_written_bytes / size, 2),
            "predicted": prediction.to_dict(),
            "prediction_error_pct": error_pct(prediction.total_s, durable),
            "pulls_durable_s": [round(t.durable_seconds, 2) for t in pulls],
        }
        log(f"{target.name} {setting.name}: {json.dumps(figures[setting.name])}")
    return figures


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every disk's figures of the last run, with each setting's pull time and error as the median
    over the runs and the errors of every run beside it."""
    summary = json.loads(json.dumps(runs[-1]))
    for disk, figures in summary.items():
        for name, value in figures.items():
            if not isinstance(value, dict) or "prediction_error_pct" not in value:
                continue
            series = [r[disk][name] for r in runs if name in r[disk]]
            for key in ("pull_durable_s", "mib_s", "dockerd_cpu_s", "prediction_error_pct"):
                value[key] = round(statistics.median(s[key] for s in series), 2)
            value["prediction_error_pct_runs"] = [s["prediction_error_pct"] for s in series]
    return summary


def preflight(args: argparse.Namespace, device_bytes: int, image_bytes: int) -> str:
    if os.geteuid() != 0:
        return "run as root (loop devices, mounts, dockerd, network namespaces)"
    for tool in ("losetup", "mkfs.xfs", "dockerd", "sync", "docker-registry", "skopeo", "nsenter", "unshare", "ip",
                 "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install docker-registry skopeo pigz busybox-static xfsprogs)"
    disks = args.disks.split(",")
    shm = shutil.disk_usage("/dev/shm")
    if "nvme" in disks and shm.free < device_bytes:
        return f"/dev/shm has {shm.free / GIB:.1f} GiB free; the memory-backed disk needs {device_bytes / GIB:.1f}"
    # the archive, one registry copy per push (at most the image's size each) and the ebs disk's file
    pushes = len({s.tag for s in SETTINGS if not args.only or s.name in args.only.split(",")})
    needed = image_bytes * (1 + pushes) + (device_bytes if "ebs" in disks else 0)
    if shutil.disk_usage(args.work_dir).free < needed:
        return f"{args.work_dir} needs {needed / GIB:.1f} GiB free"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-gib", type=float, default=2.0, help="the image's layers in all (default 2 GiB)")
    parser.add_argument("--weight-layers", type=int, default=6)
    parser.add_argument("--file-layers", type=int, default=2)
    parser.add_argument("--probe-mib", type=int, default=512, help="gpuhost's write probe per device")
    parser.add_argument("--unpack-probe-mib", type=int, default=DEFAULT_UNPACK_PROBE_BYTES // MIB,
                        help="gpuhost's docker load probe per round")
    parser.add_argument("--probe-rounds", type=int, default=3)
    parser.add_argument("--pulls", type=int, default=3,
                        help="pulls of each setting in one daemon (the image removed between them); the median counts")
    parser.add_argument("--repeat", type=int, default=1, help="the whole run on both devices this many times; medians")
    parser.add_argument("--only", default="", help="comma-separated settings (default: all)")
    parser.add_argument("--work-dir", default="/var/tmp", help="root-disk directory: archive, registry, ebs file")
    parser.add_argument("--subject", choices=("synthetic", "real"), default="synthetic",
                        help="the image pulled: synthetic (--image-gib of layers) or the real ComfyUI image")
    parser.add_argument("--disks", default="ebs,nvme", help="comma-separated disks to pull onto (default ebs,nvme)")
    args = parser.parse_args()
    if args.pulls < 1 or args.repeat < 1 or args.probe_rounds < 1:
        parser.error("--pulls, --repeat and --probe-rounds must be at least 1")
    disk_names = args.disks.split(",")
    if any(disk not in ("ebs", "nvme") for disk in disk_names) or len(set(disk_names)) != len(disk_names):
        parser.error(f"--disks is ebs, nvme or both, comma-separated, not {args.disks!r}")
    unknown = [name for name in args.only.split(",") if args.only and name not in {s.name for s in SETTINGS}]
    if unknown:
        parser.error(f"--only: no setting {', '.join(unknown)} (have {', '.join(s.name for s in SETTINGS)})")
    settings = [s for s in SETTINGS if not args.only or s.name in args.only.split(",")]
    image_bytes = subject_bytes(args)
    device_bytes = int(image_bytes * 2.2) + GIB
    problem = preflight(args, device_bytes, image_bytes)
    if problem:
        print(json.dumps({"bench": "pull", "error": problem}))
        return 2
    result: dict[str, Any] = {"bench": "pull", "subject": args.subject, "settings": [s.name for s in settings]}
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir=args.work_dir))
    started = time.perf_counter()
    try:
        if args.subject == "real":
            archive, sizes = real_image(work)
        else:
            archive, sizes = build_image(EngineClient(timeout=120.0), work, image_bytes, args.weight_layers,
                                         args.file_layers)
        result.update(image_bytes=sum(sizes), image_layers=len(sizes))
        with network_namespace() as netns, LocalRegistry(base=work, netns_pid=netns) as registry:
            pushed: dict[str, list[PullLayer]] = {}
            blobs: dict[str, tuple[str, int]] = {}
            refused: dict[str, str] = {}
            tags = {s.tag for s in settings}
            for tag in ("gzip", "zstd", "none"):
                if tag not in tags:
                    continue
                start = time.perf_counter()
                if tag == "none":
                    registry.push_uncompressed(archive, f"bench-{tag}", tag)
                else:
                    extra = ["--format", "oci", "--dest-compress-format", "zstd"] if tag == "zstd" else []
                    registry.skopeo_copy(f"docker-archive:{archive}", f"bench-{tag}", tag, *extra, timeout=1800.0)
                pushed[tag], blobs[tag] = manifest_layers(registry, f"bench-{tag}", tag, sizes)
                result[f"push_{tag}_s"] = round(time.perf_counter() - start, 1)
                result[f"compressed_bytes_{tag}"] = sum(layer.compressed_bytes for layer in pushed[tag])
                log(f"pushed {tag} in {result[f'push_{tag}_s']} s")
            archive.unlink()
            runs = []
            for number in range(args.repeat):
                disks: dict[str, Any] = {}
                for target in [t for t in both_disks(Path(args.work_dir), device_bytes) if t.name in disk_names]:
                    with loop_xfs(target, work, raw_probe_bytes=min(GIB, device_bytes // 4), prefix=PREFIX):
                        disks[target.name] = measure_disk(target, netns, registry, pushed, blobs, work, args,
                                                          settings, refused)
                log(f"run {number + 1} done")
                runs.append(disks)
        result.update(summarise(runs))
        result["runs"] = args.repeat
        result["refused"] = refused
        errors = [v["prediction_error_pct"] for d in disk_names for v in result[d].values()
                  if isinstance(v, dict) and "prediction_error_pct" in v]
        result["max_abs_error_pct"] = max((abs(e) for e in errors), default=None)
        result["within_25pct"] = bool(errors) and all(abs(e) <= 25 for e in errors)
        result["bench_s"] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
