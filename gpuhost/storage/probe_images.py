"""The unpack probe's images: layers of weights (incompressible files) with real files beside
them, and a layer of many small files (a Python environment's shape), each compressed as a
registry holds it. Served by gpuhost.storage.probe_registry for a pull, or written as a `docker
save` archive for a load. Standard library (and the zstd tool for zstd) only: the agent zipapp
runs it too."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

from gpuhost.storage.probe_registry import file_digest
from gpuhost.units import MIB

# A model image is mostly weights (incompressible) with a Python environment beside them: the
# probe's layers hold the same mix, so gzip's cost per byte is the one such an image pays.
COMPRESSIBLE_FRACTION = 0.25
# Files per GiB of probe image in the small-files layer: 20,000 for the default 1 GiB probe, as
# many as a site-packages directory of a few packages holds.
SMALL_FILES_PER_GIB = 20_000
SMALL_FILES_PER_DIRECTORY = 100


@dataclass
class ProbeLayer:
    path: str  # the layer as stored: compressed with `compression`
    compression: str
    diff_id: str  # of the uncompressed tar
    size: int  # the uncompressed tar's bytes


@dataclass
class ProbeImage:
    layers: list[ProbeLayer] = field(default_factory=list)
    entries: int = 0  # tar entries in all its layers
    history: str = "gpuhost storage probe"

    @property
    def unpacked_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    def config(self) -> dict[str, Any]:
        return {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [{"created_by": self.history} for _ in self.layers],
        }

    def write_archive(self, path: str, tag: str) -> None:
        """A `docker save` archive of the image, tagged `tag`."""
        config = json.dumps(self.config()).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        names = [f"layer{i}/layer.tar" for i in range(len(self.layers))]
        manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
        with tarfile.open(path, "w") as archive:
            for layer, name in zip(self.layers, names):
                archive.add(layer.path, arcname=name)
            for name, data in ((config_name, config), ("manifest.json", manifest)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    def remove(self) -> None:
        for layer in self.layers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layer.path)


def compressible_bytes(size: int) -> bytes:
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


def compress_layer(layer_path: str, compression: str) -> str:
    """The layer file compressed as a registry would hold it (the uncompressed file is removed
    when another is made); returns the stored file's path."""
    if compression == "none":
        return layer_path
    if compression == "gzip":
        import gzip

        pigz = shutil.which("pigz")
        target_path = layer_path + ".gz"
        if pigz is not None:  # the same bytes' kind, made on every core
            with open(target_path, "wb") as target:
                subprocess.run([pigz, "-6", "-c", layer_path], stdout=target, check=True)
        else:
            with open(layer_path, "rb") as source, gzip.open(target_path, "wb", compresslevel=6) as target:
                shutil.copyfileobj(source, target, 4 * MIB)
    elif compression == "zstd":
        zstd = shutil.which("zstd")
        if zstd is None:
            raise FileNotFoundError("zstd is not installed")
        target_path = layer_path + ".zst"
        subprocess.run([zstd, "-q", "-3", "-T0", "-f", layer_path, "-o", target_path], check=True)
    else:
        raise ValueError(f"unknown compression {compression!r}")
    os.unlink(layer_path)
    return target_path


def _finish_layer(layer_path: str, compression: str) -> ProbeLayer:
    diff_id, size = file_digest(layer_path), os.path.getsize(layer_path)
    try:
        stored = compress_layer(layer_path, compression)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layer_path)
        raise
    return ProbeLayer(stored, compression, diff_id, size)


def weights_image(directory: str, image_bytes: int, layer_bytes: int = 128 * MIB,
                  compression: str = "none") -> ProbeImage:
    """Layers of `layer_bytes` holding incompressible 64 MiB files and real files
    (COMPRESSIBLE_FRACTION of them), compressed with `compression`, as files in `directory`."""
    count = max(1, image_bytes // layer_bytes)
    per_layer = image_bytes // count
    compressible = int(per_layer * COMPRESSIBLE_FRACTION)
    files = max(1, (per_layer - compressible) // (64 * MIB))
    text = compressible_bytes(compressible) if compressible else b""
    image = ProbeImage(history="gpuhost storage probe: weights and files")
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    try:
        for index in range(count):
            layer_path = os.path.join(directory, f".gpuhost-probe-{stamp}-{index}.tar")
            with tarfile.open(layer_path, "w") as layer:
                for number in range(files):
                    info = tarfile.TarInfo(f"gpuhost-probe/{index:03d}-{number:03d}.bin")
                    info.size, info.mode, info.mtime = (per_layer - compressible) // files, 0o644, int(time.time())
                    layer.addfile(info, io.BytesIO(os.urandom(info.size)))
                    image.entries += 1
                if text:
                    info = tarfile.TarInfo(f"gpuhost-probe/{index:03d}-env.py")
                    info.size, info.mode, info.mtime = len(text), 0o644, int(time.time())
                    layer.addfile(info, io.BytesIO(text))
                    image.entries += 1
            image.layers.append(_finish_layer(layer_path, compression))
    except BaseException:
        image.remove()
        raise
    return image


def small_files_image(directory: str, files: int, compression: str = "none") -> ProbeImage:
    """One layer of `files` files of 1-16 KiB of real text, SMALL_FILES_PER_DIRECTORY to a
    directory (the shape of a Python environment), compressed with `compression`."""
    sizes = [random.Random(index).randint(1024, 16 * 1024) for index in range(files)]
    text = compressible_bytes(16 * 1024 * 64)
    layer_path = os.path.join(directory, f".gpuhost-probe-{os.getpid()}-{time.monotonic_ns()}-files.tar")
    image = ProbeImage(history="gpuhost storage probe: small files")
    now = int(time.time())
    with tarfile.open(layer_path, "w") as layer:
        for index, size in enumerate(sizes):
            folder = f"gpuhost-probe/site-packages/pkg{index // SMALL_FILES_PER_DIRECTORY:04d}"
            if index % SMALL_FILES_PER_DIRECTORY == 0:
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                layer.addfile(info)
                image.entries += 1
            info = tarfile.TarInfo(f"{folder}/module{index:06d}.py")
            offset = (index * 7919) % (len(text) - size)
            info.size, info.mode, info.mtime = size, 0o644, now
            layer.addfile(info, io.BytesIO(text[offset : offset + size]))
            image.entries += 1
    image.layers.append(_finish_layer(layer_path, compression))
    return image
