"""The models directory as `gpuhost models sync` writes it: nothing below DIR through a symbolic link.

DIR itself is the user's choice (it may be a link, e.g. to the instance store). Below it, every
folder is opened component by component with O_NOFOLLOW from the folder above (and created there
with mkdirat), and every file (NAME, NAME.part, NAME.part.json, their temporaries, the lock) is
opened, created, renamed and removed relative to its folder's descriptor, never by a path a planted
link could redirect. A link found where sync would write is an UnsafePath naming it: that file
fails, nothing outside DIR changes. One sync at a time holds DIR's lock (flock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import stat
import threading
import time
from typing import Any, Callable, Optional

from gpuhost import userfile
from gpuhost.comfyui.models.source import Interrupted
from gpuhost.model import SourceError, UsageError
from gpuhost.units import format_duration, parse_duration

LOCK_NAME = ".gpuhost-models-sync.lock"
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
LINK_REMEDY = "Remove it (or move the real files into DIR): sync writes nothing through a link below DIR."


class UnsafePath(Exception):
    """A path below DIR that sync will not write through (a link, or not a file or folder)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path} {what}")
        self.path = path


def _describe(dir_fd: int, name: str, path: str, expected: str) -> UnsafePath:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        return UnsafePath(path, f"cannot be used: {exc.strerror}")
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return UnsafePath(path, f"is a symbolic link (to {target}): refused, nothing is written through it")
    return UnsafePath(path, f"is {userfile.kind_of(info.st_mode)}, not {expected}")


def lstat_at(dir_fd: int, name: str) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class ModelsTree:
    """DIR, opened once, and its folders reached without following links (descriptors cached)."""

    def __init__(self, directory: str, *, create: bool) -> None:
        self.directory = directory
        self.fd = -1
        self._folders: dict[str, int] = {}
        self._lock = threading.Lock()
        try:
            if create:
                os.makedirs(directory, exist_ok=True)
            self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise UsageError(f"--to {directory}: cannot create it") from None
        except NotADirectoryError:
            raise UsageError(f"--to {directory} is not a directory") from None
        except OSError as exc:
            raise UsageError(f"--to {directory}: {exc.strerror or exc}") from None

    def path(self, relative: str) -> str:
        return os.path.join(self.directory, *relative.split("/")) if relative else self.directory

    def folder(self, relative: str, *, create: bool) -> Optional[int]:
        """The descriptor of DIR/relative (a `/`-separated folder), reached one component at a time
        without following a link; created when `create`, else None when it is not there."""
        with self._lock:
            if relative in self._folders:
                return self._folders[relative]
            if self.fd < 0:
                return None
            fd, opened, walked = self.fd, [], ""
            try:
                for part in relative.split("/"):
                    walked = f"{walked}/{part}" if walked else part
                    if walked in self._folders:
                        fd = self._folders[walked]
                        continue
                    fd = self._open_child(fd, part, walked, create)
                    if fd < 0:
                        return None
                    opened.append((walked, fd))
            except BaseException:
                for _, child in opened:
                    os.close(child)
                raise
            self._folders.update(opened)
            return fd

    def _open_child(self, parent: int, name: str, walked: str, create: bool) -> int:
        for _ in range(2):
            try:
                return os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return -1
                with contextlib.suppress(FileExistsError):  # another sync made it: opened above
                    os.mkdir(name, 0o755, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _describe(parent, name, self.path(walked), "a directory") from None
                raise UnsafePath(self.path(walked), f"cannot be opened: {exc.strerror}") from None
        raise UnsafePath(self.path(walked), "vanished while it was created")

    def check_files(self, folder_fd: int, folder: str, names: tuple[str, ...]) -> None:
        """Each of `names` in the folder is absent or a regular file (a link is refused by name)."""
        for name in names:
            info = lstat_at(folder_fd, name)
            if info is not None and not stat.S_ISREG(info.st_mode):
                raise _describe(folder_fd, name, self.path(f"{folder}/{name}"), "a regular file")

    def close(self) -> None:
        with self._lock:
            for fd in self._folders.values():
                os.close(fd)
            self._folders.clear()
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def open_part(folder_fd: int, name: str, path: str, *, resume: bool) -> int:
    """NAME.part for writing: the one an earlier run left (a regular file of this user, one link:
    no hard link to a file elsewhere), or a new one (created exclusively, never through a link)."""
    if resume:
        try:
            fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=folder_fd)
        except FileNotFoundError:
            raise UnsafePath(path, "vanished since the sync looked at it") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise _describe(folder_fd, name, path, "a regular file") from None
            raise UnsafePath(path, f"cannot be opened: {exc.strerror}") from None
        else:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == os.geteuid():
                return fd
            os.close(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePath(path, f"is {userfile.kind_of(info.st_mode)}, not a regular file")
            if info.st_nlink != 1:
                raise UnsafePath(path, f"has {info.st_nlink} hard links: refused, it may be a file outside DIR")
            raise UnsafePath(path, f"belongs to uid {info.st_uid}, not to this user ({os.geteuid()})")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder_fd)  # unlinkat removes a link itself, never what it points to
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                       dir_fd=folder_fd)
    except FileExistsError:
        raise _describe(folder_fd, name, path, "a regular file") from None
    except OSError as exc:
        raise UnsafePath(path, f"cannot be created: {exc.strerror}") from None


def write_json_at(folder_fd: int, name: str, payload: object) -> None:
    """Replace `name` in the folder with `payload` as JSON, atomically: a temporary created
    exclusively (never through a link), fsynced, renamed over it (a link there is replaced, not followed)."""
    temporary = f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    data = (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary, dir_fd=folder_fd)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                 dir_fd=folder_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder_fd)
        raise
    os.close(fd)
    os.replace(temporary, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)


def remove_at(folder_fd: int, *names: str) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder_fd)


def fsync_dir(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(fd)


# --- one sync at a time ----------------------------------------------------------------------------------


class DirectoryLock:
    """DIR/.gpuhost-models-sync.lock, held (flock) for the whole sync; it says who holds it."""

    def __init__(self, tree: ModelsTree) -> None:
        self.tree = tree
        self.path = tree.path(LOCK_NAME)
        self.fd = -1

    def acquire(self, wait_s: float, stop: Callable[[], bool], poll_s: float = 0.2) -> float:
        """Wait at most wait_s for the lock; the seconds waited. SourceError (exit 3) past the wait,
        Interrupted when `stop` says so meanwhile."""
        fd = self._open()
        started = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                waited = time.monotonic() - started
                if stop():
                    raise Interrupted()
                if waited >= wait_s:
                    holder = self._holder(fd)
                    raise SourceError(
                        self.tree.directory,
                        f"another models sync holds it ({holder}) and did not finish within --lock-wait "
                        f"{format_duration(wait_s)}",
                        "Let that sync finish (the boot unit gpuhost-models-sync.service, or another play) and "
                        "run again, or give a longer --lock-wait.",
                    )
                time.sleep(min(poll_s, max(0.0, wait_s - waited)) or poll_s)
            os.ftruncate(fd, 0)
            now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            os.pwrite(fd, f"pid {os.getpid()} since {now}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return time.monotonic() - started

    def _open(self) -> int:
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600,
                         dir_fd=self.tree.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                unsafe = _describe(self.tree.fd, LOCK_NAME, self.path, "a regular file")
                raise UsageError(str(unsafe), LINK_REMEDY) from None
            raise UsageError(f"{self.path}: cannot open the lock: {exc.strerror}") from None
        info = os.fstat(fd)
        problem = ""
        if not stat.S_ISREG(info.st_mode):
            problem = f"is {userfile.kind_of(info.st_mode)}, not a regular file"
        elif info.st_nlink != 1:
            problem = f"has {info.st_nlink} hard links: refused, it may be a file outside DIR"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to uid {info.st_uid}, not to this user ({os.geteuid()})"
        if problem:
            os.close(fd)
            raise UsageError(f"{self.path} {problem}", "Remove it: the next sync creates its own.")
        return fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return text if text.startswith("pid ") and text.isprintable() else "a process"

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock; the file stays for the next sync
            self.fd = -1


def parse_lock_wait(text: Any) -> float:
    """--lock-wait: a duration (`30m`, `90s`, `0` for no wait), at most a day."""
    if isinstance(text, str) and text in ("0", "0s"):
        return 0.0
    seconds = parse_duration(text, "--lock-wait")
    if seconds > 86400:
        raise UsageError(f"--lock-wait {text!r}: at most a day (24h)", "Example: --lock-wait 30m")
    return seconds
