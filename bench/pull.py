#!/usr/bin/env python3
"""`docker pull` from a real registry on loopback onto a slow and a fast disk, on both image
stores, against `gpuhost layers`' prediction, for each layer compression and gzip decompressor,
in one run.

The image (--subject synthetic, the default): a busybox base, a site-packages layer of
--small-files real files of 1-16 KiB (.py, .pyc, .so files from this machine's Python
environments, the shape a ComfyUI image's Python environment has), and layers of large
incompressible files (weights), --image-gib in all. --subject real: the real ComfyUI image the
tests run (gpuhost-comfyui:0.3.64: PyPI's CUDA torch, 56,000 files). It is pushed once per
compression to Debian's `docker-registry` and reused by every setting:

  gzip   skopeo copy (the default compression of every registry push)
  zstd   skopeo copy --format oci --dest-compress-format zstd
  none   the layers as they are (tests/support/registry.py; skopeo and docker push always compress)

Stores (--stores):

  classic      this machine's Docker 20.10 (overlay2), a private dockerd per setting
  containerd   Debian 13's Docker 26 with the containerd image store (containerd 1.7), in a
               systemd container (bench/_containerd_store.py)
  containerd2  the same with containerd 2.x from Debian unstable (Docker 29's repository ships
               containerd 2.x; it is the one that looks for igzip)

Settings per store: none, gzip-go (Go's compress/gzip: MOBY_DISABLE_PIGZ=1 for dockerd,
CONTAINERD_DISABLE_PIGZ=1 for containerd; igzip is installed and on the PATH all along),
gzip-unpigz (unpigz on the PATH), gzip-igzip (containerd 2.x only: the others never look for it)
and zstd (Docker 20.10 refuses it: reported). Disks (--disks) as in bench/unpack.py: `ebs` an XFS
loop device (direct I/O) over a file on the root disk, `nvme` one over a file in /dev/shm. Each
gets a strict dirty-page limit of its own (--dirty-limit-mib, default 256: its BDI's max_bytes and
strict_limit, restored afterwards): a pull of the 1.25 GiB image then writes back all along, as a
pull of an image many times the page cache (the 140 GB the model is for) does, instead of sitting
in 24 GiB of memory until the final sync (zstd pulls on the containerd store ran 40 % faster so).

For each store, disk and decompressor, gpuhost's own probe runs first, as a user runs it:
`gpuhost storage probe --unpack --record FILE` against that daemon (1 GiB pulls from its own
registry on loopback per compression, and a small-files layer each round; with unpigz or igzip
only gzip is measured again: `--compressions gzip`). Each setting is then pulled --pulls times (default 3) by a
freshly started daemon, the image removed between pulls, each pull timed until the data is on the
device (pull + syncfs), and the median counts. After the last pull, `gpuhost layers IMAGE
--probe-record FILE --download-mibs D --json` predicts the pull end to end (the layers' files
counted, the write rate of the recorded probe, the decompressor the daemon has), D being what one
connection downloads, verifies and stores from that registry (curl | tee | sha256sum).

Per setting: the median pull, MiB/s, of the raw write, the daemons' CPU-seconds (dockerd; with
the containerd store containerd and dockerd, reaped children such as unpigz included), the disk
bytes in use after the pull (containerd keeps the compressed blobs beside the unpacked layers),
which decompressor ran and the proof (classic: dockerd's debug log lines; containerd: process
accounting in the container, the programs that ran and their CPU-seconds), what `gpuhost layers`
said and predicted, the error, and the load average. One JSON line. Target: every run's error within
25 % (`within_25pct`, `max_abs_error_pct` over all runs, not their median).

Everything the run creates (registries, containers, the bench images with --remove-images, loop
devices, files) is removed, also on errors. Run as root:
  .venv/bin/python bench/pull.py                                   # both stores, both disks (~30 min)
  .venv/bin/python bench/pull.py --stores containerd --disks ebs --only gzip-unpigz,zstd
  .venv/bin/python bench/pull.py --subject real --disks ebs --only gzip-go,zstd
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
    Target,
    add_bytes,
    both_disks,
    error_pct,
    finish_archive,
    fs_used_bytes,
    import_base,
    loop_xfs,
    network_namespace,
    private_dockerd,
    random_layer,
    run,
    timed_until_durable,
)
from gpuhost.engine import EngineClient  # noqa: E402
from gpuhost.storage.probe_registry import file_digest  # noqa: E402
from gpuhost.units import MIB  # noqa: E402
from tests.support import containerd_store as cstore  # noqa: E402
from tests.support.registry import LocalRegistry, in_netns  # noqa: E402

PREFIX = "gpuhost-pull-bench"
STORES = ("classic", "containerd", "containerd2")
DEFAULT_STORES = ("classic", "containerd")


@dataclass(frozen=True)
class Setting:
    store: str
    name: str
    tag: str  # which push of the image
    decompressor: str  # what the daemon is set up to use for gzip: go, unpigz, igzip

    @property
    def key(self) -> str:
        return f"{self.store}/{self.name}"


# the daemon's environment for each gzip decompressor (igzip stays installed in every case)
ENVIRONMENTS = {
    ("classic", "go"): {"MOBY_DISABLE_PIGZ": "1"},
    ("classic", "unpigz"): {},
    ("containerd", "go"): {"CONTAINERD_DISABLE_PIGZ": "1"},
    ("containerd", "unpigz"): {},
    ("containerd2", "go"): {"CONTAINERD_DISABLE_IGZIP": "1", "CONTAINERD_DISABLE_PIGZ": "1"},
    ("containerd2", "unpigz"): {"CONTAINERD_DISABLE_IGZIP": "1"},
    ("containerd2", "igzip"): {},
}

SETTINGS = tuple(
    [Setting(store, "none", "none", "go") for store in STORES]
    + [Setting(store, "gzip-go", "gzip", "go") for store in STORES]
    + [Setting(store, "gzip-unpigz", "gzip", "unpigz") for store in STORES]
    + [Setting("containerd2", "gzip-igzip", "gzip", "igzip")]
    + [Setting(store, "zstd", "zstd", "go") for store in STORES]
)


def log(message: str) -> None:
    sys.stderr.write(f"[pull {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --- the image ------------------------------------------------------------------------------


def python_files(count: int) -> Iterator[tuple[str, Path]]:
    """`count` real files of 1-16 KiB from this machine's Python environments (repeated under
    other names when there are fewer), as (name in the layer, path)."""
    roots = [Path(p) for p in ("/usr/lib/python3", "/usr/lib/python3.11", str(REPO / ".venv" / "lib"),
                               "/work/main/.venv/lib") if Path(p).is_dir()]
    found: list[Path] = []
    for root in roots:
        for directory, _, names in os.walk(root):
            for name in sorted(names):
                path = Path(directory) / name
                with contextlib.suppress(OSError):
                    if not path.is_symlink() and 1024 <= path.stat().st_size <= 16 * 1024:
                        found.append(path)
            if len(found) >= count:
                break
        if len(found) >= count:
            break
    if not found:
        raise SystemExit("no Python files of 1-16 KiB on this machine for the site-packages layer")
    for index in range(count):
        path = found[index % len(found)]
        yield f"opt/venv/lib/site-packages/pkg{index // 100:04d}/{index:06d}-{path.name}", path


def site_packages_layer(path: Path, files: int) -> str:
    """A layer tar of `files` small real files, 100 to a directory; returns its diff id."""
    with tarfile.open(path, "w") as tar:
        for name, source in python_files(files):
            tar.add(source, arcname=name, recursive=False)
    return file_digest(str(path))


def build_image(shared: EngineClient, work: Path, image_bytes: int, weight_layers: int,
                small_files: int) -> tuple[Path, list[int]]:
    """A `docker save` archive; returns it and every layer's unpacked size, base first."""
    base_layer, base_config = import_base(shared, PREFIX)
    names, sizes = ["base/layer.tar"], [len(base_layer)]
    diff_ids = list(base_config["rootfs"]["diff_ids"])
    history = list(base_config.get("history") or [])
    archive = work / "image.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, names[0], base_layer)
        layer_path = work / "site-packages.tar"
        diff_ids.append(site_packages_layer(layer_path, small_files))
        history.append({"created_by": f"RUN pip install ... ({small_files} files of 1-16 KiB)"})
        names.append("site-packages/layer.tar")
        tar.add(layer_path, arcname=names[-1])
        sizes.append(layer_path.stat().st_size)
        layer_path.unlink()
        weights = max(weight_layers * 2 * MIB, image_bytes - sum(sizes))
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


def push_all(registry: LocalRegistry, archive: Path, sizes: list[int], tags: set[str],
             result: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Push the image once per compression; returns each push's largest blob (digest, size)."""
    blobs: dict[str, tuple[str, int]] = {}
    for tag in ("gzip", "zstd", "none"):
        if tag not in tags:
            continue
        start = time.perf_counter()
        if tag == "none":
            registry.push_uncompressed(archive, f"bench-{tag}", tag)
        else:
            extra = ["--format", "oci", "--dest-compress-format", "zstd"] if tag == "zstd" else []
            registry.skopeo_copy(f"docker-archive:{archive}", f"bench-{tag}", tag, *extra, timeout=3600.0)
        raw = run(*in_netns(registry.netns_pid, ["skopeo", "inspect", "--raw", "--tls-verify=false",
                                                 f"docker://{registry.address}/bench-{tag}:{tag}"]))
        layers = json.loads(raw)["layers"]
        largest = max(layers, key=lambda layer: int(layer["size"]))
        blobs[tag] = (largest["digest"], int(largest["size"]))
        result[f"push_{tag}_s"] = round(time.perf_counter() - start, 1)
        result[f"compressed_bytes_{tag}"] = sum(int(layer["size"]) for layer in layers)
        log(f"pushed {tag} in {result[f'push_{tag}_s']} s ({result[f'compressed_bytes_{tag}'] / MIB:.0f} MiB)")
    return blobs


def serve_pushed(registry: LocalRegistry, netns_pid: int) -> LocalRegistry:
    """Another registry process serving the same pushed images, in `netns_pid`'s network namespace."""
    other = LocalRegistry(base=registry.base.parent, netns_pid=netns_pid)
    other.storage = registry.storage
    return other.start()


def download_mib_s(registry: LocalRegistry, repository: str, digest: str, size: int, directory: Path,
                   rounds: int = 3) -> float:
    """How fast one connection fetches a blob from the registry the way Docker does before it
    extracts anything: received, its digest verified, stored on the disk under test (curl | tee |
    sha256sum, the median of `rounds`). The figure a user passes to `gpuhost layers --download-mibs`."""
    url = f"http://{registry.address}/v2/{repository}/blobs/{digest}"
    target = directory / "download-probe"
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        output = run(*in_netns(registry.netns_pid, [
            "bash", "-c", 'set -o pipefail; curl -sSf --max-time 600 "$1" | tee "$2" | sha256sum',
            "download", url, str(target)]))
        seconds = time.perf_counter() - start
        target.unlink(missing_ok=True)
        if not digest.endswith(output.split()[0]):
            raise RuntimeError(f"{url}: the blob's digest is {output.split()[0]}")
        rates.append(size / MIB / seconds)
    return round(statistics.median(rates), 1)


# --- the two stores -------------------------------------------------------------------------


class ClassicStore:
    """Private dockerds of this machine (Docker 20.10, overlay2), data-root on the loop disk; the
    gpuhost CLI runs on this machine, in the registry's network namespace."""

    def __init__(self, target: Target, netns: int, work: Path) -> None:
        assert target.mount is not None
        self.target, self.netns, self.work = target, netns, work
        self.data_root = target.mount / "docker"
        self.registry: LocalRegistry | None = None
        self._stack: contextlib.ExitStack | None = None
        self.host = ""
        self.inner_host = ""  # the address gpuhost is given: the same socket here
        self.pids: list[int] = []
        self.log_path = Path()

    @contextlib.contextmanager
    def daemon(self, name: str, decompressor: str) -> Iterator[None]:
        environment = dict(os.environ, **ENVIRONMENTS[("classic", decompressor)])
        with private_dockerd(name, self.data_root, self.work, netns_pid=self.netns, environment=environment,
                             daemon_json={"max-concurrent-downloads": 3, "debug": True}) as daemon:
            self.host, self.pids = daemon.host, [daemon.pid]
            self.inner_host = daemon.host
            self.log_path = self.work / f"dockerd-{name}.log"
            yield

    def gpuhost(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = in_netns(self.netns, [sys.executable, "-m", "gpuhost", *args])
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=3600, check=False)

    @contextlib.contextmanager
    def proof(self) -> Iterator[dict[str, Any]]:
        """Which decompressor dockerd ran: its debug log's lines while the block ran (one per layer)."""
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        found: dict[str, Any] = {"method": "dockerd debug log (one line per gzip layer)"}
        yield found
        with open(self.log_path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
        found["lines"] = {
            "unpigz": text.count("to decompress"),  # "Using /usr/bin/unpigz to decompress"
            "go": text.count("Use of pigz is disabled") + text.count("unpigz binary not found"),
        }
        found["igzip_on_path"] = shutil.which("igzip") or ""
        lines = found["lines"]
        found["ran"] = "unpigz" if lines["unpigz"] and not lines["go"] else "go" if lines["go"] and not lines[
            "unpigz"] else "mixed" if lines["go"] else "none"

    def cleanup(self) -> None:
        subprocess.run(["umount", "-R", str(self.data_root)], capture_output=True, check=False)
        shutil.rmtree(self.data_root, ignore_errors=True)


class ContainerdStore:
    """Docker 26 with the containerd image store in a systemd container; the registry runs in the
    container's network namespace; gpuhost runs inside the container."""

    def __init__(self, target: Target, flavour: cstore.Flavour, work: Path, registry: LocalRegistry) -> None:
        assert target.mount is not None
        self.target, self.work, self.pushed = target, work, registry
        self.instance = cstore.Instance(flavour, f"{PREFIX}-{flavour.name}-{target.name}-{os.getpid()}",
                                        target.mount / "cstore", REPO)
        self.registry: LocalRegistry | None = None
        self.host = ""
        self.inner_host = "unix:///run/docker.sock"  # gpuhost runs inside the container
        self.pids: list[int] = []

    def __enter__(self) -> ContainerdStore:
        self.instance.start()
        self.registry = serve_pushed(self.pushed, self.instance.pid)
        self.host = self.instance.host
        return self

    def __exit__(self, *exc: object) -> None:
        if self.registry is not None:
            self.registry.stop()
        self.instance.stop()
        shutil.rmtree(self.instance.store_dir, ignore_errors=True)

    @contextlib.contextmanager
    def daemon(self, name: str, decompressor: str) -> Iterator[None]:
        self.instance.restart_daemons(ENVIRONMENTS[(self.instance.flavour.name, decompressor)])
        self.pids = self.instance.daemon_pids()
        yield

    def gpuhost(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["docker", "exec", "-e", f"PYTHONPATH={cstore.SOURCE_DIR}", self.instance.name, "python3", "-m",
                   "gpuhost", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)

    @contextlib.contextmanager
    def proof(self) -> Iterator[dict[str, Any]]:
        """Which decompressor containerd ran: process accounting in the container while the block ran."""
        found: dict[str, Any] = {"method": "process accounting in the container (accton, dump-acct)"}
        with self.instance.accounting() as ran:
            yield found
        found["programs"] = {k: v for k, v in ran.items() if k in ("unpigz", "igzip", "pigz", "gzip", "zstd")}
        found["igzip_on_path"] = self.instance.exec("sh", "-c", "command -v igzip || true")
        found["ran"] = "igzip" if "igzip" in ran else "unpigz" if "unpigz" in ran else "go (in containerd)"

    def cleanup(self) -> None:
        pass


# --- the run --------------------------------------------------------------------------------


def wait_released(target: Target, used_before: int, timeout: float = 120.0) -> None:
    """Until the removed image's space is given back (containerd collects its garbage after the
    delete): a pull that finds its blobs still there would download nothing."""
    assert target.mount is not None
    deadline = time.monotonic() + timeout
    while fs_used_bytes(target.mount) > used_before + 64 * MIB:
        if time.monotonic() > deadline:
            log(f"{target.name}: {(fs_used_bytes(target.mount) - used_before) / MIB:.0f} MiB still in use "
                f"{timeout:.0f} s after the delete")
            return
        time.sleep(1)
        run("sync", "-f", str(target.mount))


def pull(host: str, reference: str) -> None:
    proc = subprocess.run(["docker", "-H", host, "pull", "-q", reference], capture_output=True, text=True,
                          timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"docker pull failed: {proc.stderr.strip()[-400:]}")


def run_probe(store: ClassicStore | ContainerdStore, record: str, unpack_mib: int, compressions: str) -> dict[str, Any]:
    done = store.gpuhost("storage", "probe", "--unpack", "--unpack-mib", str(unpack_mib), "--compressions",
                         compressions, "--record", record, "--docker-host", store.inner_host, "--json")
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {}
    if done.returncode != 0 or not report:
        raise RuntimeError(f"gpuhost storage probe ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    return report


def run_layers(store: ClassicStore | ContainerdStore, reference: str, record: str, download: float) -> dict[str, Any]:
    done = store.gpuhost("layers", reference, "--probe-record", record, "--download-mibs", str(download),
                         "--docker-host", store.inner_host, "--json")
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {}
    if done.returncode not in (0, 1) or not report:
        raise RuntimeError(f"gpuhost layers ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
    return report


def measure_setting(store: ClassicStore | ContainerdStore, setting: Setting, record: str, download: float,
                    reference: str, image_bytes: int, pulls: int) -> dict[str, Any]:
    target = store.target
    assert target.mount is not None
    timed_pulls = []
    with store.daemon(f"{target.name}-{setting.store}-{setting.name}", setting.decompressor):
        client = EngineClient(store.host, timeout=900.0)

        def remove(used_before: int) -> None:
            client.request("DELETE", f"/images/{reference}", params={"force": True})
            run("sync", "-f", str(target.mount))
            wait_released(target, used_before)

        with store.proof() as proof:
            for number in range(pulls):
                used_before = fs_used_bytes(target.mount)
                with timed_until_durable(target, store.pids) as timed:
                    pull(store.host, reference)
                timed_pulls.append(timed)
                if number < pulls - 1:
                    remove(used_before)
        # the last pull's image stays for `gpuhost layers` (outside the accounting: counting a
        # containerd store's files runs zstd on its blobs)
        layers = run_layers(store, reference, record, download)
        remove(used_before)
    timed = sorted(timed_pulls, key=lambda t: t.durable_seconds)[len(timed_pulls) // 2]
    predicted = layers["pull"]["predicted"] or {}
    durable = timed.durable_seconds
    return {
        "pull_durable_s": round(durable, 2),
        "pull_s": round(timed.seconds, 2),
        "mib_s": round(image_bytes / MIB / durable, 1),
        "achieved_of_raw_pct": round(image_bytes / MIB / durable / target.figures["raw_write_mib_s"] * 100, 1),
        "daemon_cpu_s": timed.dockerd_cpu_s,
        "system_busy_pct": timed.system_busy_pct,
        "steal_pct": timed.steal_pct,
        "load_avg_1m": timed.load_avg_1m,
        "device_written_of_image": round(timed.device_written_bytes / image_bytes, 2),
        "disk_used_bytes": timed.disk_used_bytes,
        "disk_used_of_image": round(timed.disk_used_bytes / image_bytes, 2),
        "decompressor_ran": proof.get("ran") if setting.tag == "gzip" else "n/a",
        "proof": proof,
        "layers_says": {
            "decompressor": (layers["pull"].get("decompressor") or {}).get("gzip"),
            "why": (layers["pull"].get("decompressor") or {}).get("why"),
            "image_store": layers["unpack"].get("image_store"),
            "write_mib_s": layers["unpack"].get("write_mib_s"),
            "write_source": layers["unpack"].get("write_source"),
            "entries": (layers["pull"].get("entries") or {}).get("total"),
            "entries_seconds": (layers["pull"].get("entries") or {}).get("seconds"),
            "decompress_source": layers["pull"].get("decompress_source"),
        },
        "predicted": predicted,
        "prediction_error_pct": error_pct(float(predicted.get("total_s") or 0.0), durable) if predicted else None,
        "pulls_durable_s": [round(t.durable_seconds, 2) for t in timed_pulls],
    }


def measure_store(store: ClassicStore | ContainerdStore, settings: list[Setting], blobs: dict[str, tuple[str, int]],
                  image_bytes: int, args: argparse.Namespace, refused: dict[str, str]) -> dict[str, Any]:
    target = store.target
    assert target.mount is not None
    figures: dict[str, Any] = {}
    registry = store.registry
    assert registry is not None
    downloads = {tag: download_mib_s(registry, f"bench-{tag}", *blobs[tag], target.mount) for tag in blobs}
    figures["download_mib_s"] = downloads
    for decompressor in dict.fromkeys(s.decompressor for s in settings):
        chosen = [s for s in settings if s.decompressor == decompressor and s.key not in refused]
        if not chosen:
            continue
        record = f"/var/lib/gpuhost/bench-probe-{decompressor}.json" if isinstance(store, ContainerdStore) \
            else str(store.work / f"probe-{target.name}-{decompressor}.json")
        with store.daemon(f"{target.name}-{chosen[0].store}-probe-{decompressor}", decompressor):
            log(f"{target.name} {chosen[0].store}: gpuhost storage probe --unpack ({decompressor})")
            # Go's gzip is the daemon's own: its probe measures every compression; with another
            # decompressor only gzip changes, and only gzip is measured again (as a user would)
            compressions = "none,gzip,zstd" if decompressor == "go" else "gzip"
            probe = run_probe(store, record, args.probe_unpack_mib, compressions)
        unpack = probe.get("unpack") or {}
        figures[f"probe_{decompressor}"] = {
            "write_mib_s": (probe.get("write") or {}).get("write_mib_s"),
            "rates_mib_s": unpack.get("rates_mib_s"),
            "round_rates_mib_s": unpack.get("round_rates_mib_s"),
            "per_entry_us": unpack.get("per_entry_us"),
            "files_round_seconds": unpack.get("files_round_seconds"),
            "cpu_busy_pct": unpack.get("cpu_busy_pct"),
            "daemon_cpu_pct": unpack.get("daemon_cpu_pct"),
            "method": unpack.get("method"),
            "pull_error": unpack.get("pull_error"),
            "unsupported": unpack.get("unsupported"),
            "image_store": probe.get("image_store"),
            "decompressor": (probe.get("decompressor") or {}).get("gzip"),
        }
        for setting in chosen:
            reference = f"{registry.address}/bench-{setting.tag}:{setting.tag}"
            try:
                figures[setting.name] = measure_setting(store, setting, record, downloads[setting.tag], reference,
                                                        image_bytes, args.pulls)
            except RuntimeError as exc:
                refused[setting.key] = str(exc)[-300:]
                log(f"{target.name} {setting.key}: {exc}")
                continue
            log(f"{target.name} {setting.key}: {json.dumps(figures[setting.name])}")
    return figures


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run's figures, each setting's pull time and error the median over the runs, and
    the errors of every run beside it."""
    summary: dict[str, Any] = json.loads(json.dumps(runs[-1]))
    for store, disks in summary.items():
        for disk, figures in disks.items():
            for name, value in figures.items():
                if not isinstance(value, dict) or "prediction_error_pct" not in value:
                    continue
                series = [r[store][disk][name] for r in runs if name in r.get(store, {}).get(disk, {})]
                for key in ("pull_durable_s", "mib_s", "daemon_cpu_s", "prediction_error_pct", "disk_used_bytes"):
                    values = [s[key] for s in series if s.get(key) is not None]
                    value[key] = round(statistics.median(values), 2) if values else None
                value["prediction_error_pct_runs"] = [s["prediction_error_pct"] for s in series]
                value["load_avg_1m_runs"] = [s["load_avg_1m"] for s in series]
    return summary


def preflight(args: argparse.Namespace, device_bytes: int, image_bytes: int, pushes: int) -> str:
    if os.geteuid() != 0:
        return "run as root (loop devices, mounts, dockerd, network namespaces, containers)"
    for tool in ("losetup", "mkfs.xfs", "dockerd", "sync", "docker-registry", "skopeo", "nsenter", "unshare", "ip",
                 "busybox", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install docker-registry skopeo pigz isal busybox-static xfsprogs)"
    if "classic" in args.stores and shutil.which("unpigz") is None:
        return "unpigz is not installed (apt-get install pigz)"
    shm = shutil.disk_usage("/dev/shm")
    if "nvme" in args.disks and shm.free < device_bytes:
        return f"/dev/shm has {shm.free / GIB:.1f} GiB free; the memory-backed disk needs {device_bytes / GIB:.1f}"
    # the archive, one registry copy per push (at most the image's size each) and the ebs disk's file,
    # with 15 GiB left for the machine's other users
    needed = image_bytes * (1 + pushes) + (device_bytes if "ebs" in args.disks else 0) + 15 * GIB
    if shutil.disk_usage(args.work_dir).free < needed:
        return f"{args.work_dir} needs {needed / GIB:.1f} GiB free (15 GiB of it left for others)"
    return ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subject", choices=("synthetic", "real"), default="synthetic",
                        help="the image pulled: synthetic (--image-gib) or the real ComfyUI image")
    parser.add_argument("--image-gib", type=float, default=1.25, help="the synthetic image's size (default 1.25)")
    parser.add_argument("--small-files", type=int, default=30_000,
                        help="files of 1-16 KiB in the synthetic image's site-packages layer (default 30,000)")
    parser.add_argument("--weight-layers", type=int, default=4)
    parser.add_argument("--pulls", type=int, default=3, help="pulls per setting; the median counts")
    parser.add_argument("--probe-unpack-mib", type=int, default=1024,
                        help="the probe's --unpack-mib (default 1024, what a user runs); smaller for a quick try")
    parser.add_argument("--repeat", type=int, default=1, help="the whole run this many times; medians")
    parser.add_argument("--stores", default=",".join(DEFAULT_STORES), help=f"comma-separated: {', '.join(STORES)}")
    parser.add_argument("--disks", default="ebs,nvme", help="comma-separated: ebs, nvme")
    parser.add_argument("--only", default="", help="comma-separated setting names (none, gzip-go, gzip-unpigz, "
                        "gzip-igzip, zstd) or store/name pairs")
    parser.add_argument("--dirty-limit-mib", type=int, default=256,
                        help="the loop disks' own dirty-page limit (strict), so that the bench image writes back "
                        "all along as an image many times the page cache does; 0: the kernel's global one")
    parser.add_argument("--work-dir", default="/var/tmp", help="root-disk directory: archive, registry, ebs file")
    parser.add_argument("--remove-images", action="store_true",
                        help="remove the containerd stores' bench images afterwards (else kept for the next run)")
    args = parser.parse_args()
    args.stores = args.stores.split(",")
    args.disks = args.disks.split(",")
    if args.pulls < 1 or args.repeat < 1 or not 100 <= args.small_files <= 1_000_000:
        parser.error("--pulls and --repeat must be at least 1, --small-files from 100 to 1,000,000")
    if not 0.25 <= args.image_gib <= 64:
        parser.error("--image-gib must be from 0.25 to 64")
    if not 0 <= args.dirty_limit_mib <= 65536:
        parser.error("--dirty-limit-mib must be from 0 (none of its own) to 65536")
    if any(s not in STORES for s in args.stores) or len(set(args.stores)) != len(args.stores):
        parser.error(f"--stores is one or more of {', '.join(STORES)}, not {','.join(args.stores)!r}")
    if any(d not in ("ebs", "nvme") for d in args.disks) or len(set(args.disks)) != len(args.disks):
        parser.error("--disks is ebs, nvme or both, comma-separated")
    wanted = [w for w in args.only.split(",") if w]
    known = {s.name for s in SETTINGS} | {s.key for s in SETTINGS}
    if any(w not in known for w in wanted):
        parser.error(f"--only: no setting {', '.join(w for w in wanted if w not in known)}")
    args.settings = [s for s in SETTINGS if s.store in args.stores and (not wanted or s.name in wanted
                                                                         or s.key in wanted)]
    if not args.settings:
        parser.error("no setting left to run")
    return args


def main() -> int:
    args = parse_args()
    image_bytes = subject_bytes(args)
    containerd_stores = [s for s in args.stores if s != "classic"]
    # the image twice (the containerd store keeps the blobs beside the layers), the probe's
    # 1 GiB twice with its archive, and Docker's staging copy
    device_bytes = max(int(image_bytes * 2.5) + GIB, 5 * GIB)
    tags = {s.tag for s in args.settings}
    problem = preflight(args, device_bytes, image_bytes, len(tags))
    if problem:
        print(json.dumps({"bench": "pull", "error": problem}))
        return 2
    result: dict[str, Any] = {"bench": "pull", "subject": args.subject, "settings": [s.key for s in args.settings],
                              "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir=args.work_dir))
    flavours = {name: cstore.flavour(name, PREFIX) for name in containerd_stores}
    started = time.perf_counter()
    try:
        for name, chosen in flavours.items():
            cstore.build_image(chosen, log)
            result[f"{name}_versions"] = run("docker", "run", "--rm", chosen.image, "sh", "-c",
                                             "dockerd --version; containerd --version")
        if args.subject == "real":
            archive, sizes = real_image(work)
        else:
            archive, sizes = build_image(EngineClient(timeout=120.0), work, image_bytes, args.weight_layers,
                                         args.small_files)
        image_bytes = sum(sizes)
        result.update(image_bytes=image_bytes, image_layers=len(sizes))
        refused: dict[str, str] = {}
        runs = []
        with network_namespace() as netns, LocalRegistry(base=work, netns_pid=netns) as registry:
            blobs = push_all(registry, archive, sizes, tags, result)
            archive.unlink()
            for number in range(args.repeat):
                figures: dict[str, Any] = {}
                for target in [t for t in both_disks(Path(args.work_dir), device_bytes) if t.name in args.disks]:
                    with loop_xfs(target, work, raw_probe_bytes=min(GIB, device_bytes // 4), prefix=PREFIX,
                                  dirty_limit_bytes=args.dirty_limit_mib * MIB or None):
                        for store_name in args.stores:
                            settings = [s for s in args.settings if s.store == store_name]
                            log(f"run {number + 1}, {target.name}, {store_name} store")
                            disk = figures.setdefault(store_name, {}).setdefault(
                                target.name, {"raw_write_mib_s": target.figures["raw_write_mib_s"]})
                            if store_name == "classic":
                                classic = ClassicStore(target, netns, work)
                                classic.registry = registry
                                try:
                                    disk.update(measure_store(classic, settings, blobs, image_bytes, args, refused))
                                finally:
                                    classic.cleanup()
                            else:
                                with ContainerdStore(target, flavours[store_name], work, registry) as inner:
                                    disk.update(measure_store(inner, settings, blobs, image_bytes, args, refused))
                log(f"run {number + 1} done, load average {os.getloadavg()[0]:.2f}")
                runs.append(figures)
        result.update(summarise(runs))
        result["runs"] = args.repeat
        result["refused"] = refused
        # every run's error counts: "within 25 % in three consecutive runs", not the median of them
        errors = [e for store in args.stores for disk in result.get(store, {}).values() for v in disk.values()
                  if isinstance(v, dict) for e in v.get("prediction_error_pct_runs", []) if e is not None]
        result["max_abs_error_pct"] = max((abs(e) for e in errors), default=None)
        result["within_25pct"] = bool(errors) and all(abs(e) <= 25 for e in errors)
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["bench_s"] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.remove_images:
            for chosen in flavours.values():
                cstore.remove_image(chosen)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
