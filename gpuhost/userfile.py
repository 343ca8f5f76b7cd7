"""Read a file a user names without letting it hang or exhaust the process.

Every path an option, a config or a captured tree (--root) names goes through here: a FIFO would
block a plain open() forever, /dev/zero would fill memory, a file of deep brackets would raise
RecursionError. So a file is opened with O_NONBLOCK (a FIFO's open returns at once) and checked
after the open (fstat: no race with a swap) to be a regular file; it is read up to a cap and never
past it (a /proc file says size 0: only the cap bounds it); JSON and YAML are refused past a
nesting depth. Each refusal is a UserFileError (a UsageError: exit 2) naming the path and why.

Standard library only: the agent imports it on hosts with python3 >= 3.9 (PyYAML is imported only
by load_yaml, and only when a YAML file is read).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
from typing import Any, Optional

from gpuhost.model import UsageError

KIB = 1024
MIB = 1024 * KIB

# The most bytes each kind of file may have (docs/files.md lists them). Generous: each is far above
# any real file of its kind, and each keeps a mistaken or hostile path from costing more than that.
WORKFLOW_MAX = 64 * MIB  # an API-format workflow; a few hundred kB with embedded notes
MANIFEST_MAX = 16 * MIB  # a models manifest: about 200 bytes an entry
DAEMON_JSON_MAX = 16 * MIB  # a daemon.json is a few kB (library/docker_daemon_config.py: the same cap)
STORAGE_CONFIG_MAX = 1 * MIB  # the docker_storage role's boot configuration
RECORD_MAX = 16 * MIB  # JSON records gpuhost writes itself (models.json, .part.json, storage probe)
INVENTORY_MAX = 16 * MIB  # one file of an Ansible inventory (static YAML/INI, group_vars)
SSH_CONFIG_MAX = 1 * MIB  # an ssh config and each file it includes
KNOWN_HOSTS_MAX = 16 * MIB
CA_BUNDLE_MAX = 16 * MIB  # Debian's whole ca-certificates bundle is about 220 kB
HOST_CONFIG_MAX = 16 * MIB  # configuration under /etc (CDI specs, config.toml, GRUB's files)
HOST_DATABASE_MAX = 256 * MIB  # dpkg's status file: a few MB on a full host
PROC_MAX = 64 * KIB  # one /proc or /sys file (they report size 0; /proc/driver/nvidia/version is 200 bytes)

MAX_DEPTH = 100  # nesting of JSON/YAML values: gpuhost's own files nest less than 10 levels

_KIND_NAMES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


class UserFileError(UsageError):
    """A named file gpuhost will not read, or cannot: exit 2 where the user named it.

    reason: missing | not-regular | too-large | unreadable | not-text | invalid | too-deep
    """

    def __init__(self, path: str, reason: str, message: str, remedy: str = "") -> None:
        super().__init__(message, remedy)
        self.path = path
        self.reason = reason

    @property
    def missing(self) -> bool:
        return self.reason == "missing"


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words ("a FIFO", "a directory", ...)."""
    for test, name in _KIND_NAMES:
        if test(mode):
            return name
    return "not a regular file"


def _label(what: str, path: str) -> str:
    return f"{what} {path}" if what else path


def _not_regular(what: str, path: str, mode: int) -> UserFileError:
    return UserFileError(path, "not-regular", f"{_label(what, path)} is {kind_of(mode)}, not a regular file",
                         "Name the file itself (a FIFO, device or socket is never read: it could block or never end).")


def _too_large(what: str, path: str, size: Optional[int], cap: int) -> UserFileError:
    has = f"is {size} bytes" if size is not None else "goes on"
    return UserFileError(path, "too-large", f"{_label(what, path)} {has}, more than the {_bytes(cap)} it may have",
                         "Name the right file; the limits are in docs/files.md.")


def _bytes(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"


def open_regular(path: str, what: str = "", *, dir_fd: Optional[int] = None, follow_symlinks: bool = True,
                 flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """An open descriptor of `path`, which must be a regular file (checked on the open file).

    O_NONBLOCK makes the open of a FIFO return at once (then refused); follow_symlinks=False refuses
    a symbolic link at the last component (O_NOFOLLOW). The caller closes the descriptor.
    """
    open_flags = flags | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        open_flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, open_flags, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        raise UserFileError(path, "missing", f"{_label(what, path)} does not exist") from None
    except OSError as exc:
        # ENXIO: a socket (or a FIFO opened for writing); ELOOP: a symlink refused by O_NOFOLLOW
        if exc.errno in (errno.ENXIO, errno.ELOOP, errno.EOPNOTSUPP):
            with contextlib.suppress(OSError):
                info = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
                raise _not_regular(what, path, info.st_mode) from None
        raise UserFileError(path, "unreadable", f"cannot read {_label(what, path)}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(what, path, info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, path: str, what: str, max_bytes: int) -> bytes:
    """At most max_bytes from an open regular file, refusing one that is (or grows) larger."""
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise _too_large(what, path, size, max_bytes)
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = os.read(fd, min(MIB, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # a /proc file (size 0) or one that grew while it was read
                raise _too_large(what, path, None, max_bytes)
    except OSError as exc:
        raise UserFileError(path, "unreadable", f"cannot read {_label(what, path)}: {exc.strerror or exc}") from None
    return b"".join(chunks)


def read_bytes(path: str, what: str, max_bytes: int, *, dir_fd: Optional[int] = None,
               follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most max_bytes; UserFileError otherwise."""
    fd = open_regular(path, what, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    try:
        return read_fd(fd, path, what, max_bytes)
    finally:
        os.close(fd)


def decode_text(data: bytes, path: str, what: str, errors: str = "strict") -> str:
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise UserFileError(path, "not-text", f"{_label(what, path)} is not UTF-8 text "
                            f"(byte {data[exc.start]:#04x} at offset {exc.start})") from None


def read_text(path: str, what: str, max_bytes: int, *, errors: str = "strict", dir_fd: Optional[int] = None,
              follow_symlinks: bool = True) -> str:
    """UTF-8 text of a regular file of at most max_bytes (errors="replace" for host files)."""
    return decode_text(read_bytes(path, what, max_bytes, dir_fd=dir_fd, follow_symlinks=follow_symlinks),
                       path, what, errors)


def read_host_text(path: str, max_bytes: int = PROC_MAX) -> Optional[str]:
    """A file of the host or a captured tree (/proc, /sys, /etc) for a collector: its text, or None
    when it is missing, unreadable, not a regular file or larger than max_bytes (a collector turns
    that into a finding, never a hang)."""
    try:
        return read_text(path, "", max_bytes, errors="replace")
    except UserFileError:
        return None


def read_prefix(path: str, what: str, max_bytes: int) -> str:
    """The first max_bytes of a regular file as text (bad bytes replaced), for readers that always
    read only the head of a file (an os-release, dpkg's status, a capture of `systemctl show`)."""
    fd = open_regular(path, what)
    try:
        return os.read(fd, max_bytes).decode("utf-8", "replace")
    except OSError as exc:
        raise UserFileError(path, "unreadable", f"cannot read {_label(what, path)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_host_prefix(path: str, max_bytes: int) -> Optional[str]:
    """read_prefix for a collector: None when the file is missing, unreadable or not a regular file."""
    try:
        return read_prefix(path, "", max_bytes)
    except UserFileError:
        return None


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep lists and dicts nest in `value` (a scalar is 0); stops counting past `limit`.
    Iterative: a value nested deeper than the recursion limit costs no recursion here."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            if id(item) in seen:  # YAML aliases share nodes: count each once
                continue
            seen.add(id(item))
            children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def _too_deep(where: str, path: str, limit: int) -> UserFileError:
    return UserFileError(path, "too-deep", f"{where} nests deeper than {limit} levels",
                         "No file gpuhost reads nests that deep: name the right file.")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} does not fit a number")
    return number


def strict_loads(data: bytes | str) -> Any:
    """JSON as the standard defines it: NaN, infinities and numbers that overflow are refused; so is
    nesting deeper than the parser can follow (RecursionError). Every failure is a ValueError
    (UnicodeDecodeError included)."""
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def parse_json(data: bytes | str, where: str, *, path: str = "", max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON (strict_loads), nesting at most max_depth deep.

    `where` names the document in messages (a path, "standard input")."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise _too_deep(where, path or where, max_depth) from None
    except UnicodeDecodeError as exc:
        raise UserFileError(path or where, "not-text", f"{where} is not UTF-8 text (offset {exc.start})") from None
    except ValueError as exc:
        raise UserFileError(path or where, "invalid", f"{where} is not valid JSON: {str(exc)[:300]}") from None
    if nesting_depth(value, max_depth) > max_depth:
        raise _too_deep(where, path or where, max_depth)
    return value


def load_json(path: str, what: str, max_bytes: int, *, max_depth: int = MAX_DEPTH, dir_fd: Optional[int] = None,
              follow_symlinks: bool = True) -> Any:
    """A regular file of at most max_bytes holding strict JSON nested at most max_depth deep.

    The one call bench/bad_answers.py times for special files (FIFO, /dev/zero, huge, deep)."""
    text = read_text(path, what, max_bytes, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    return parse_json(text, _label(what, path), path=path, max_depth=max_depth)


def parse_yaml(text: str, where: str, *, path: str = "", max_depth: int = MAX_DEPTH,
               loader: Optional[type] = None) -> Any:
    """YAML through a SafeLoader (or the SafeLoader subclass `loader`), nesting at most max_depth
    deep: counted while the document is composed, before PyYAML's recursion could overflow."""
    import yaml

    base: Any = loader or yaml.SafeLoader

    class DepthLimitedLoader(base):  # type: ignore[misc]
        _gpuhost_depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._gpuhost_depth += 1
            try:
                if self._gpuhost_depth > max_depth:
                    raise _too_deep(where, path or where, max_depth)
                return super().compose_node(parent, index)
            finally:
                self._gpuhost_depth -= 1

    try:
        return yaml.load(text, Loader=DepthLimitedLoader)
    except yaml.YAMLError as exc:
        raise UserFileError(path or where, "invalid", f"{where} is not valid YAML: {str(exc)[:300]}") from None
    except RecursionError:
        raise _too_deep(where, path or where, max_depth) from None


def load_yaml(path: str, what: str, max_bytes: int, *, max_depth: int = MAX_DEPTH,
              loader: Optional[type] = None) -> Any:
    """A regular file of at most max_bytes holding YAML (UTF-8) nested at most max_depth deep."""
    text = read_text(path, what, max_bytes)
    return parse_yaml(text, _label(what, path), path=path, max_depth=max_depth, loader=loader)


def check_regular(path: str, what: str, max_bytes: int) -> None:
    """For a file another library opens itself (ssl's CA bundle, Ansible's inventory): refuse before
    it does what it could not read safely."""
    fd = open_regular(path, what)
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > max_bytes:
        raise _too_large(what, path, size, max_bytes)


__all__ = [
    "MAX_DEPTH",
    "UserFileError",
    "check_regular",
    "kind_of",
    "load_json",
    "load_yaml",
    "nesting_depth",
    "open_regular",
    "parse_json",
    "parse_yaml",
    "read_bytes",
    "read_fd",
    "read_host_prefix",
    "read_host_text",
    "read_prefix",
    "read_text",
]
