"""A model file on disk: is it there, whole and the one the manifest names? No network.

A verified file carries a stamp (an extended attribute: sha256, size, mtime), so a later sync
does not hash gigabytes again to learn it is unchanged; `gpuhost models verify` always hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Callable, Optional

from gpuhost import userfile
from gpuhost.comfyui.models.catalog import ModelFile
from gpuhost.comfyui.models.safetensors import check_model_file
from gpuhost.comfyui.models.source import Interrupted
from gpuhost.comfyui.models.tree import write_json_at
from gpuhost.facts.docker import DAEMON_JSON, read_daemon_json
from gpuhost.facts.storage import locate
from gpuhost.model import UsageError

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


StopCheck = Callable[[], bool]


def sha256_fd(fd: int, should_stop: Optional[StopCheck] = None) -> str:
    """The sha256 of the open file, read from its start; Interrupted when should_stop() says so
    (a signal: hashing gigabytes must not delay the stop)."""
    digest = hashlib.sha256()
    offset = 0
    while True:
        if should_stop is not None and should_stop():
            raise Interrupted()
        block = os.pread(fd, HASH_BLOCK, offset)
        if not block:
            return digest.hexdigest()
        digest.update(block)
        offset += len(block)


def sha256_of(path: str, should_stop: Optional[StopCheck] = None) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return sha256_fd(fd, should_stop)
    finally:
        os.close(fd)


def _stamp_value(sha256: str, stat: os.stat_result) -> str:
    return f"{sha256}:{stat.st_size}:{stat.st_mtime_ns}"


def write_stamp(path: str, sha256: str) -> None:
    # no user xattrs on this filesystem: the next sync hashes again; never through a link (an
    # attribute on a file outside DIR)
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(path, STAMP_ATTR, _stamp_value(sha256, os.stat(path, follow_symlinks=False)).encode(),
                    follow_symlinks=False)


def write_stamp_fd(fd: int, sha256: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(fd, STAMP_ATTR, _stamp_value(sha256, os.fstat(fd)).encode())


def _stamped(path: str, sha256: str) -> bool:
    try:
        return os.getxattr(path, STAMP_ATTR).decode() == _stamp_value(sha256, os.stat(path))
    except (OSError, AttributeError, UnicodeDecodeError):
        return False


def check_local(model: ModelFile, path: str, *, hash_files: bool = True, trust_stamp: bool = False,
                should_stop: Optional[StopCheck] = None) -> LocalState:
    """Size, the format's header, and the sha256 when the manifest gives one (and hash_files)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return LocalState("missing", problem="not there")
    except OSError as exc:
        return LocalState("corrupt", problem=f"cannot read it: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return LocalState("corrupt", problem=f"is {userfile.kind_of(info.st_mode)}, not a regular file")
    size = info.st_size
    if size < model.size:
        return LocalState("short", size, f"{size} bytes of {model.size}")
    if size > model.size:
        return LocalState("long", size, f"{size} bytes, the manifest says {model.size}")
    problem = check_model_file(path)
    if problem:
        return LocalState("corrupt", size, problem)
    if model.sha256 and hash_files and not (trust_stamp and _stamped(path, model.sha256)):
        try:
            actual = sha256_of(path, should_stop)
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


def check_record_path(path: str) -> None:
    """--record: absent, or a regular file (a link there is refused by name, never written through)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"--record {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"--record {path} is a symbolic link (to {os.readlink(path)}): refused, nothing is "
                         "written through it", "Remove the link, or give the real path.")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"--record {path} is {userfile.kind_of(info.st_mode)}, not a regular file")


def write_json_atomic(path: str, payload: object) -> None:
    """Replace `path` with `payload` as JSON in one rename; the temporary beside it is created
    exclusively and never through a link (its name is predictable)."""
    check_record_path(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_json_at(directory_fd, os.path.basename(path), payload)
    finally:
        os.close(directory_fd)
