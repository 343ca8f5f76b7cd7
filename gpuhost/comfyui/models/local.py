"""A model file on disk: is it there, whole and the one the manifest names? No network.

A verified file carries a stamp (an extended attribute: sha256, size, mtime), so a later sync
does not hash gigabytes again to learn it is unchanged; `gpuhost models verify` always hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional

from gpuhost.comfyui.models.catalog import ModelFile
from gpuhost.comfyui.models.safetensors import check_model_file
from gpuhost.facts.docker import DAEMON_JSON, read_daemon_json
from gpuhost.facts.storage import locate

STAMP_ATTR = "user.gpuhost.sha256"
HASH_BLOCK = 8 * 1024 * 1024
FALLBACK_MODELS_DIR = "/var/lib/gpuhost/models"


@dataclass
class LocalState:
    # ok | missing | short | long | corrupt
    status: str
    size: Optional[int] = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(HASH_BLOCK)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def _stamp_value(sha256: str, stat: os.stat_result) -> str:
    return f"{sha256}:{stat.st_size}:{stat.st_mtime_ns}"


def write_stamp(path: str, sha256: str) -> None:
    # no user xattrs on this filesystem: the next sync hashes again
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(path, STAMP_ATTR, _stamp_value(sha256, os.stat(path)).encode())


def _stamped(path: str, sha256: str) -> bool:
    try:
        return os.getxattr(path, STAMP_ATTR).decode() == _stamp_value(sha256, os.stat(path))
    except (OSError, AttributeError, UnicodeDecodeError):
        return False


def check_local(model: ModelFile, path: str, *, hash_files: bool = True, trust_stamp: bool = False) -> LocalState:
    """Size, the format's header, and the sha256 when the manifest gives one (and hash_files)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return LocalState("missing", problem="not there")
    except OSError as exc:
        return LocalState("corrupt", problem=f"cannot read it: {exc.strerror}")
    if size < model.size:
        return LocalState("short", size, f"{size} bytes of {model.size}")
    if size > model.size:
        return LocalState("long", size, f"{size} bytes, the manifest says {model.size}")
    problem = check_model_file(path)
    if problem:
        return LocalState("corrupt", size, problem)
    if model.sha256 and hash_files and not (trust_stamp and _stamped(path, model.sha256)):
        try:
            actual = sha256_of(path)
        except OSError as exc:
            return LocalState("corrupt", size, f"cannot read it: {exc.strerror}")
        if actual != model.sha256:
            return LocalState("corrupt", size, f"sha256 {actual[:16]}... is not the manifest's {model.sha256[:16]}...")
        write_stamp(path, actual)
    return LocalState("ok", size)


def default_models_dir(root: str = "/", daemon_json: str = DAEMON_JSON) -> str:
    """`models/` at the top of the disk that holds Docker's data-root (the instance store's fast disk);
    /var/lib/gpuhost/models when data-root is on the root filesystem."""
    config, _ = read_daemon_json(os.path.join(root, daemon_json.lstrip("/")))
    data_root = str((config or {}).get("data-root") or "/var/lib/docker")
    mountpoint = locate(data_root, root).mountpoint
    if mountpoint and mountpoint != "/":
        return os.path.join(mountpoint, "models")
    return FALLBACK_MODELS_DIR


def write_json_atomic(path: str, payload: object) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)
