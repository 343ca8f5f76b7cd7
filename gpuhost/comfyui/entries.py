"""How many tar entries (files, directories, links) each of an image's layers holds: the pull
model's per-file part (gpuhost.unpack.predict_pull), counted from what this host keeps.

  classic store     the unpacked layers: overlay2's diff directories, which the Engine API names
                    (GraphDriver.Data UpperDir and LowerDir); one directory read per directory of
                    the image, no file is opened. About a second for 100,000 entries.
  containerd store  the Engine API names no directories, but containerd keeps each compressed
                    layer blob beside the unpacked layers: the tar headers are read from them,
                    which means decompressing them (gzip with zlib, zstd with the zstd tool);
                    uncompressed blobs are read header by header, skipping the contents.

The registry's blobs would tell too, but reading one costs its whole download: not done. Reading
Docker's or containerd's directories needs root; without it the count is left out and said.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Optional, cast

from gpuhost.facts.containerd import collect_containerd, image_store
from gpuhost.unpack import compression_of

CONTENT_BLOBS = "io.containerd.content.v1.content/blobs"
MAX_INDEX_BYTES = 4 * 1024 * 1024
ZSTD_TIMEOUT_S = 3600.0


@dataclass
class EntryCount:
    per_layer: list[int] = field(default_factory=list)  # base first; empty when not counted
    source: str = ""
    seconds: float = 0.0
    error: str = ""

    @property
    def total(self) -> int:
        return sum(self.per_layer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total if self.per_layer else None,
            "per_layer": self.per_layer,
            "source": self.source,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


def count_directory_entries(path: str) -> int:
    """Every entry below `path` (files, directories, links, overlay whiteouts), not `path` itself."""
    count = 0
    pending = [path]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                count += 1
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return count


def count_tar_entries(stream: BinaryIO, mode: str = "r|") -> int:
    """The members of a tar stream (pax and GNU long-name headers belong to the member they describe)."""
    with tarfile.open(fileobj=stream, mode=mode) as archive:  # type: ignore[call-overload]
        return sum(1 for _ in archive)


def _overlay2_dirs(inspect: dict[str, Any]) -> list[str]:
    driver = inspect.get("GraphDriver") if isinstance(inspect.get("GraphDriver"), dict) else {}
    data = (driver or {}).get("Data")
    if (driver or {}).get("Name") != "overlay2" or not isinstance(data, dict):
        return []
    lower = [p for p in str(data.get("LowerDir") or "").split(":") if p]
    upper = str(data.get("UpperDir") or "")
    # LowerDir lists the layers from the top down
    return list(reversed(lower)) + ([upper] if upper else [])


def _blob_path(containerd_root: str, digest: str, root: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    return os.path.join(root, containerd_root.lstrip("/"), CONTENT_BLOBS, algorithm, hexdigest)


def _read_json_blob(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        data = fh.read(MAX_INDEX_BYTES + 1)
    if len(data) > MAX_INDEX_BYTES:
        raise ValueError("a manifest blob larger than 4 MiB")
    parsed = json.loads(data)
    if not isinstance(parsed, dict):
        raise ValueError("a manifest blob that is not a JSON object")
    return parsed


def _platform_manifest(index: dict[str, Any], inspect: dict[str, Any], blob: Any) -> dict[str, Any]:
    """The manifest for the image's platform among an index's, the first one kept locally."""
    wanted = (str(inspect.get("Os") or "linux"), str(inspect.get("Architecture") or ""))
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict):
            continue
        platform = entry.get("platform")
        platform = platform if isinstance(platform, dict) else {}
        if (platform.get("os"), platform.get("architecture")) != wanted and wanted[1]:
            continue
        path = blob(str(entry.get("digest") or ""))
        if os.path.exists(path):
            return _read_json_blob(path)
    raise ValueError(f"no manifest for {wanted[0]}/{wanted[1]} is kept locally")


def _drain(stream: BinaryIO) -> None:
    """Read a stream to its end: a truncated gzip blob raises EOFError here, after its last member."""
    while stream.read(4 * 1024 * 1024):
        pass


def count_blob_entries(path: str, media_type: str) -> int:
    """The tar entries of one layer blob; a truncated or corrupt blob raises, it is never a count."""
    compression = compression_of(media_type)
    if compression == "none":
        count, end = 0, 0
        with tarfile.open(path, mode="r:") as archive:  # seekable: the contents are skipped, not read
            for member in archive:
                count += 1
                end = member.offset_data + member.size
        if end > os.path.getsize(path):
            raise EOFError(f"{os.path.basename(path)[:19]}: the blob ends inside its last file")
        return count
    if compression == "gzip":
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as unzipped:
            stream = cast(BinaryIO, unzipped)
            count = count_tar_entries(stream, "r|")
            _drain(stream)
        return count
    if compression == "zstd":
        program = shutil.which("zstd")
        if program is None:
            raise FileNotFoundError("zstd layers need the zstd tool to be counted (apt-get install zstd)")
        with subprocess.Popen([program, "-dcq", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            output = cast(BinaryIO, proc.stdout)
            count = count_tar_entries(output, "r|")
            _drain(output)
            if proc.wait(timeout=ZSTD_TIMEOUT_S) != 0:
                raise ValueError(f"{os.path.basename(path)[:19]}: zstd could not decompress the blob")
        return count
    raise ValueError(f"a layer compressed as {compression!r}")


def _containerd_layers(inspect: dict[str, Any], root: str) -> list[tuple[str, str]]:
    """(blob path, media type) of each layer of the image, base first, from containerd's content store."""
    containerd_root = collect_containerd(root).root_dir

    def blob(digest: str) -> str:
        return _blob_path(containerd_root, digest, root)

    target = _read_json_blob(blob(str(inspect.get("Id") or "")))
    if "manifests" in target:
        target = _platform_manifest(target, inspect, blob)
    layers = target.get("layers")
    if not isinstance(layers, list):
        raise ValueError("the image's manifest lists no layers")
    found = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise ValueError("a layer of the manifest is not an object")
        found.append((blob(str(layer.get("digest") or "")), str(layer.get("mediaType") or "")))
    return found


def count_image_entries(inspect: dict[str, Any], info: dict[str, Any], root: str = "/") -> EntryCount:
    """Each layer's entries from the local store (see the module's text); what it cost in seconds."""
    started = time.monotonic()
    result = EntryCount()
    try:
        if image_store(info) == "containerd":
            result.source = "containerd's content store (the compressed layer blobs, decompressed to read)"
            result.per_layer = [count_blob_entries(path, media) for path, media in _containerd_layers(inspect, root)]
        else:
            directories = _overlay2_dirs(inspect)
            if not directories:
                graph = inspect.get("GraphDriver")
                driver = graph.get("Name") if isinstance(graph, dict) else None
                raise ValueError(f"the Engine API names no overlay2 layer directories (driver {driver or '?'})")
            result.source = "the unpacked layers (overlay2 diff directories)"
            result.per_layer = [count_directory_entries(os.path.join(root, d.lstrip("/"))) for d in directories]
    except PermissionError as exc:
        result.per_layer = []
        result.error = f"{exc.filename or 'the layers'}: permission denied (run as root to count the layers' files)"
    except (OSError, ValueError, tarfile.TarError, EOFError) as exc:
        result.per_layer = []
        result.error = f"the layers' files could not be counted: {str(exc)[:300]}"
    result.seconds = time.monotonic() - started
    return result


def entries_for(counted: EntryCount, layer_count: int) -> Optional[list[int]]:
    """The per-layer counts when they pair with `layer_count` layers, else None."""
    return counted.per_layer if counted.per_layer and len(counted.per_layer) == layer_count else None
