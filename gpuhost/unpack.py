"""Predicted image unpack time: how long `docker pull`/`docker load` takes to write an image.

One model for every command that predicts (tune-ebs, layers, check, the storage role's
findings): unpacking is bound by the data-root device's sustained write throughput. The seed
figure it must reproduce: 140 GB at gp3's 125 MB/s baseline is about 18-19 minutes.

On a fast disk Docker's own processing (decompressing, hashing, extracting: CPU) sets the time,
not the disk: `gpuhost storage probe --unpack` measures it per layer compression (1 GiB loads
timed until the data is on the device, the device's share taken out) and per file (a layer of
many small files: creating a file costs as much as writing tens of kilobytes), on the image store
the daemon uses, with the gzip decompressor it has; predict_pull() splits a pull into download,
decompression, files and write.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from gpuhost.units import MIB

# The gzip decompressors a daemon may run (gpuhost.facts.decompressor says which one a host has).
GZIP_DECOMPRESSORS = ("go", "unpigz", "igzip")

# Layer compressions Docker meets in a registry (the media type's suffix), and "none" for
# uncompressed layers (`docker load` archives, `application/vnd.docker.image.rootfs.diff.tar`).
COMPRESSIONS = ("none", "gzip", "zstd")

# Sustained write throughput by device class when nothing was measured, in MiB/s.
# ebs: the gp3 baseline (125 MiB/s), the class's floor; a tuned volume passes its own figure.
# instance-store: one local NVMe disk of g5/g6e/p4d class instances (AWS quotes sequential
# writes of roughly 1-2 GB/s per disk); 1000 MiB/s is the conservative end.
DEFAULT_WRITE_MIBS = {
    "ebs": 125.0,
    "instance-store": 1000.0,
    "md": 1000.0,
    "loop": 125.0,
    "other": 125.0,
}


def default_write_mibs(device_class: str) -> float:
    return DEFAULT_WRITE_MIBS.get(device_class, DEFAULT_WRITE_MIBS["other"])


def predict_unpack_seconds(image_bytes: int, write_mib_s: float, unpack_mib_s: float | None = None) -> float:
    """Seconds until `image_bytes` of unpacked layers are on a device that writes `write_mib_s`.

    `unpack_mib_s` is Docker's own processing rate on the host (reading, hashing and extracting
    layers, measured by gpuhost.storage.probe.measure_unpack). Given, it adds its share: the
    processing runs ahead into the page cache and the device's writes finish after it, so the
    two add up. Left out, the device alone bounds the time (a floor of the real figure).
    """
    if write_mib_s <= 0:
        raise ValueError("write throughput must be positive")
    seconds = image_bytes / (write_mib_s * MIB)
    if unpack_mib_s is not None:
        if unpack_mib_s <= 0:
            raise ValueError("unpack throughput must be positive")
        seconds += image_bytes / (unpack_mib_s * MIB)
    return seconds


def processing_rate(image_mib: float, durable_seconds: float, write_mib_s: float | None) -> float:
    """Docker's own rate (MiB/s) from a load timed until its data was on a device that writes
    `write_mib_s`: the device's share of the unpacked bytes taken out, so that predicting for the
    same device (gpuhost.unpack.predict_unpack_seconds) gives back the measured time, and for a
    faster or slower one moves only that share."""
    per_mib = durable_seconds / image_mib
    if write_mib_s and write_mib_s > 0:
        processing = per_mib - 1.0 / write_mib_s
        # a device probe faster than the load itself leaves nothing sensible to take out
        if processing > per_mib * 0.1:
            per_mib = processing
    return 1.0 / per_mib


def compression_of(media_type: str) -> str:
    """`gzip`, `zstd`, `none` or `unknown` for a layer's media type."""
    kind = media_type.lower()
    if kind.endswith(("+gzip", ".tar.gzip", ".gzip")):
        return "gzip"
    if kind.endswith(("+zstd", ".zstd")):
        return "zstd"
    if kind.endswith((".tar", "diff.tar", "layer.v1.tar")):
        return "none"
    return "unknown"


def median_rate(rates: list[float]) -> float:
    """The median of several probe rounds: one slow or fast round cannot move it."""
    positive = [r for r in rates if r > 0]
    if not positive:
        raise ValueError("no positive rate among the probe rounds")
    return float(median(positive))


@dataclass(frozen=True)
class PullLayer:
    compression: str
    compressed_bytes: int  # what crosses the network
    size_bytes: int  # what lands in data-root
    entries: int = 0  # the layer's tar entries (files, directories, links); 0 when not counted


@dataclass(frozen=True)
class PullPrediction:
    download_s: float
    decompress_s: float
    write_s: float
    # which measured rate each layer's decompression used ("none" when its own was not measured)
    rates_used: dict[str, float]
    # the layers' entries at the probe's cost per entry of their compression (0 when unknown)
    files_s: float = 0.0
    entries: int = 0
    per_entry_us: dict[str, float] | None = None

    @property
    def total_s(self) -> float:
        return self.download_s + self.decompress_s + self.files_s + self.write_s

    def to_dict(self) -> dict[str, object]:
        return {
            "download_s": round(self.download_s, 1),
            "decompress_s": round(self.decompress_s, 1),
            "files_s": round(self.files_s, 1),
            "write_s": round(self.write_s, 1),
            "total_s": round(self.total_s, 1),
            "decompress_mib_s": {k: round(v, 1) for k, v in self.rates_used.items()},
            "entries": self.entries,
            "per_entry_us": {k: round(v, 1) for k, v in (self.per_entry_us or {}).items()} or None,
        }


def predict_pull(
    layers: list[PullLayer],
    write_mib_s: float,
    decompress_mib_s: dict[str, float] | None = None,
    download_mib_s: float | None = None,
    per_entry_us: dict[str, float] | None = None,
) -> PullPrediction:
    """Seconds until a pull of `layers` is on a device that writes `write_mib_s`, in four parts.

    decompress: each layer's unpacked bytes at the rate `gpuhost storage probe --unpack`
    measured for its compression, pulling from a registry on the host's loopback: Docker's
    fetching, hashing, storing, decompressing and extracting, with the fetching of the next
    layers running beside the extraction as in any pull. A compression it did not measure uses
    the uncompressed rate, a floor.
    files: each layer's tar entries at `per_entry_us` of its compression (the uncompressed one
    where its own was not measured), the probe's cost of one more file beyond its bytes (creating
    it, its metadata, its directory entry): a layer of 50,000 small files of a Python environment
    takes several times longer than its bytes alone. Per compression, because a decompressor that
    runs beside the extraction (containerd's zstd, unpigz, igzip) hides behind the files' cost.
    download: what waiting for a network slower than the loopback adds: the compressed bytes at
    `download_mib_s` run beside the unpacking, so only the first layer's (in the image's order,
    base first) and what the unpacking cannot hide count (left out, 0: a registry on this network
    or a pull-through cache).
    write: the unpacked bytes at the device's rate, as predict_unpack_seconds.
    """
    if write_mib_s <= 0:
        raise ValueError("write throughput must be positive")
    costs = dict(per_entry_us or {})
    if any(not 0 <= cost < float("inf") for cost in costs.values()):
        raise ValueError("the cost per entry must be zero or more")
    rates = {k: v for k, v in (decompress_mib_s or {}).items() if v and v > 0}
    size = sum(layer.size_bytes for layer in layers)
    write_s = size / (write_mib_s * MIB)
    decompress_s = 0.0
    used: dict[str, float] = {}
    for layer in layers:
        rate = rates.get(layer.compression) or rates.get("none")
        if rate is None:
            continue
        used[layer.compression if layer.compression in rates else "none"] = rate
        decompress_s += layer.size_bytes / (rate * MIB)
    entries = sum(max(0, layer.entries) for layer in layers)
    files_s = 0.0
    if costs:
        fallback = costs.get("none", next(iter(costs.values())))
        files_s = sum(max(0, layer.entries) * costs.get(layer.compression, fallback) for layer in layers) / 1e6
    download_s = 0.0
    if download_mib_s is not None:
        if download_mib_s <= 0:
            raise ValueError("download throughput must be positive")
        compressed = [layer.compressed_bytes for layer in layers]
        total_download = sum(compressed) / (download_mib_s * MIB)
        # the unpacking starts once the image's first layer is in; the others download beside it
        first = (compressed[0] if compressed else 0) / (download_mib_s * MIB)
        download_s = max(first, total_download - decompress_s - files_s)
    return PullPrediction(download_s=download_s, decompress_s=decompress_s, write_s=write_s, rates_used=used,
                          files_s=files_s, entries=entries, per_entry_us=costs or None)


def per_entry_cost_us(files_seconds: float, files_bytes: int, entries: int, unpack_mib_s: float,
                      write_mib_s: float | None) -> float:
    """Microseconds one more tar entry costs, from a load of `entries` small files (`files_bytes`
    in all) that took `files_seconds` until durable: what the bytes explain (Docker's rate for
    uncompressed layers, the device's write rate) is taken out, the rest is the files' own."""
    if entries <= 0 or files_seconds <= 0 or unpack_mib_s <= 0:
        raise ValueError("the small-files load needs entries, a time and an unpack rate")
    bytes_s = files_bytes / MIB / unpack_mib_s
    if write_mib_s and write_mib_s > 0:
        bytes_s += files_bytes / MIB / write_mib_s
    return max(0.0, files_seconds - bytes_s) / entries * 1e6
