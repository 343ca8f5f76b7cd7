"""Which program decompresses a pulled image's gzip layers on this host, read from the process
that does it: its environment and its PATH, as that program's own source looks them up.

Who decompresses depends on the image store (the daemon's /info DriverStatus):

  classic store     dockerd itself (pkg/archive; moby/go-archive from Docker 28): `unpigz` when
                    it is on dockerd's PATH and MOBY_DISABLE_PIGZ is not true, else Go's
                    compress/gzip. It never looks for igzip (Docker 20.10 to 29).
  containerd store  the containerd daemon's diff service applies the layers (dockerd only fetches
                    the blobs): containerd 1.x (1.7 is Debian 13's) looks for `unpigz` only
                    (CONTAINERD_DISABLE_PIGZ); containerd 2.x first for `igzip` (Intel ISA-L,
                    the `isal` package; CONTAINERD_DISABLE_IGZIP), then `unpigz`; else Go's gzip.
                    A `stream_processors` entry in containerd's config.toml that accepts gzip
                    layers comes before all of them.

Each process looks once, when it first decompresses, so a program installed later is used only
after the daemon restarts. The environment is read from /proc (root only); where it cannot be
read, systemd's default PATH is assumed and said.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from gpuhost import userfile
from gpuhost.facts.containerd import CONFIG as CONTAINERD_CONFIG
from gpuhost.facts.containerd import image_store

try:
    import tomllib
except ImportError:  # Python < 3.11 on remote hosts
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

# systemd's PATH for services (what dockerd and containerd get from their units)
SYSTEMD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
GZIP_MEDIA_TYPES = (
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
)
_ENVIRON_MAX = 1024 * 1024


@dataclass
class Decompressor:
    store: str = "classic"  # "classic" or "containerd"
    process: str = "dockerd"  # the daemon that decompresses the layers
    pid: int | None = None
    version: str = ""  # containerd's, for the containerd store
    gzip: str = "go"  # "go", "unpigz", "igzip", or a stream processor's program name
    path: str = ""  # the program's path ("" for Go's own gzip)
    looks_for: list[str] = field(default_factory=list)  # in the order the process's source looks
    basis: str = ""  # where the environment came from
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store, "process": self.process, "pid": self.pid, "version": self.version,
            "gzip": self.gzip, "path": self.path, "looks_for": self.looks_for, "basis": self.basis, "why": self.why,
        }


def go_parse_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool: None for what it refuses (the daemons then warn and ignore it)."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def look_path(name: str, path_value: str, root: str = "/") -> str:
    """Go's exec.LookPath for a bare name: the first executable regular file on PATH ("" if none)."""
    for directory in path_value.split(":"):
        directory = directory or "."
        if not os.path.isabs(directory):
            continue  # a relative PATH entry names nothing for a daemon started by systemd
        candidate = os.path.join(directory, name)
        try:
            status = os.stat(os.path.join(root, candidate.lstrip("/")))
        except OSError:
            continue
        if os.path.isfile(os.path.join(root, candidate.lstrip("/"))) and status.st_mode & 0o111:
            return candidate
    return ""


def choose_gzip(store: str, containerd_version: str, environment: dict[str, str], path_value: str,
                root: str = "/", stream_processor: str = "") -> tuple[str, str, list[str], str]:
    """(program, its path, what the process looks for, why) for the gzip layers of `store`."""
    if store == "containerd":
        major = _major(containerd_version)
        looks_for = ["igzip", "unpigz"] if major is None or major >= 2 else ["unpigz"]
        if stream_processor:
            name = os.path.basename(stream_processor)
            return name, stream_processor, looks_for, f"containerd's config.toml names {stream_processor} as a " \
                "stream processor for gzip layers"
        disables = {"igzip": "CONTAINERD_DISABLE_IGZIP", "unpigz": "CONTAINERD_DISABLE_PIGZ"}
        version_note = f"containerd {containerd_version or '(version unknown: taken as 2.x)'}"
        skipped = []
        for program in looks_for:
            variable = disables[program]
            if go_parse_bool(environment.get(variable, "")) is True:
                skipped.append(f"{variable}={environment[variable]}")
                continue
            found = look_path(program, path_value, root)
            if found:
                return program, found, looks_for, f"{version_note} looks for {' then '.join(looks_for)} on its PATH " \
                    f"and found {found}" + (f" ({', '.join(skipped)})" if skipped else "")
            skipped.append(f"no {program} on its PATH")
        return "go", "", looks_for, f"{version_note} looks for {' then '.join(looks_for)}: " \
            f"{', '.join(skipped)}; Go's compress/gzip"
    looks_for = ["unpigz"]
    disabled = go_parse_bool(environment.get("MOBY_DISABLE_PIGZ", ""))
    if disabled is True:
        return "go", "", looks_for, f"MOBY_DISABLE_PIGZ={environment['MOBY_DISABLE_PIGZ']}: dockerd uses Go's " \
            "compress/gzip"
    found = look_path("unpigz", path_value, root)
    if found:
        return "unpigz", found, looks_for, f"dockerd looks for unpigz on its PATH and found {found} (it never " \
            "looks for igzip)"
    return "go", "", looks_for, "no unpigz on dockerd's PATH (it never looks for igzip): Go's compress/gzip"


def _major(version: str) -> int | None:
    match = re.match(r"v?(\d+)\.", version.strip())
    return int(match.group(1)) if match else None


# --- the process --------------------------------------------------------------------------


def _read(path: str, limit: int = _ENVIRON_MAX) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(limit)


def _listening_inodes(pid: str, socket_path: str, proc: str) -> set[str]:
    """Inodes of the unix sockets bound to `socket_path` in the network namespace of `pid`."""
    wanted = {socket_path, os.path.normpath(socket_path)}
    if socket_path.startswith("/var/run/"):
        wanted.add(socket_path[len("/var"):])
    elif socket_path.startswith("/run/"):
        wanted.add("/var" + socket_path)
    inodes: set[str] = set()
    try:
        lines = _read(os.path.join(proc, pid, "net", "unix")).decode("utf-8", "replace").splitlines()[1:]
    except OSError:
        return inodes
    for line in lines:
        parts = line.split()
        if len(parts) >= 8 and parts[7] in wanted:
            inodes.add(parts[6])
    return inodes


def _holds_socket(pid: str, inodes: set[str], proc: str) -> bool:
    fd_dir = os.path.join(proc, pid, "fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    targets = {f"socket:[{inode}]" for inode in inodes}
    for name in names:
        try:
            if os.readlink(os.path.join(fd_dir, name)) in targets:
                return True
        except OSError:
            continue
    return False


def find_daemon(comm: str, socket_path: str = "", proc: str = "/proc") -> int | None:
    """The pid of the process named `comm` that listens on `socket_path` (the only one of that
    name when no socket is given or none matches); None when there is none or it is ambiguous."""
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    candidates = []
    for pid in pids:
        try:
            if _read(os.path.join(proc, pid, "comm"), 64).decode("utf-8", "replace").strip() == comm:
                candidates.append(pid)
        except OSError:
            continue
    if socket_path:
        for pid in candidates:
            inodes = _listening_inodes(pid, socket_path, proc)
            if inodes and _holds_socket(pid, inodes, proc):
                return int(pid)
    return int(candidates[0]) if len(candidates) == 1 else None


def process_environment(pid: int, proc: str = "/proc") -> dict[str, str] | None:
    try:
        raw = _read(os.path.join(proc, str(pid), "environ"))
    except OSError:
        return None
    environment = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key:
            environment[key] = value
    return environment


def gzip_stream_processor(config_text: str) -> str:
    """The program of a containerd `stream_processors` entry that accepts gzip layers ("" if none)."""
    try:
        config = tomllib.loads(config_text)
    except (ValueError, RecursionError):
        return ""
    processors = config.get("stream_processors")
    if not isinstance(processors, dict):
        return ""
    for entry in processors.values():
        if not isinstance(entry, dict):
            continue
        accepts = entry.get("accepts")
        program = entry.get("path")
        if isinstance(accepts, list) and isinstance(program, str) and any(t in GZIP_MEDIA_TYPES for t in accepts):
            return program
    return ""


def _unix_path(docker_host: str) -> str:
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    return "" if "://" in docker_host else docker_host


def collect_decompressor(info: dict[str, Any], version: dict[str, Any], docker_host: str = "",
                         root: str = "/", proc: str = "/proc") -> Decompressor:
    """What decompresses gzip layers for the daemon that answered /info and /version at
    `docker_host` (a unix socket on this host; another host's daemon is judged by its versions
    and systemd's default PATH here)."""
    store = image_store(info)
    result = Decompressor(store=store, process="containerd" if store == "containerd" else "dockerd")
    stream_processor = ""
    if store == "containerd":
        for component in version.get("Components") or []:
            if isinstance(component, dict) and str(component.get("Name", "")).lower() == "containerd":
                result.version = str(component.get("Version", ""))[:80]
        containerd_info = info.get("Containerd") if isinstance(info.get("Containerd"), dict) else {}
        socket = str((containerd_info or {}).get("Address") or DEFAULT_CONTAINERD_SOCKET)
        result.pid = find_daemon("containerd", socket, proc)
        try:
            stream_processor = gzip_stream_processor(
                userfile.read_text(os.path.join(root, CONTAINERD_CONFIG), "", userfile.HOST_CONFIG_MAX))
        except userfile.UserFileError:
            stream_processor = ""
    else:
        socket = _unix_path(docker_host or "unix:///var/run/docker.sock")
        result.pid = find_daemon("dockerd", socket, proc) if socket else None
    environment = process_environment(result.pid, proc) if result.pid is not None else None
    if environment is None:
        environment = {}
        result.basis = f"systemd's default PATH ({result.process}'s environment could not be read: run as root)"
        path_value = SYSTEMD_DEFAULT_PATH
    else:
        result.basis = f"the environment of {result.process} (pid {result.pid})"
        path_value = environment.get("PATH", "")  # Go's LookPath finds nothing without one
        # the programs as that process sees them (its own mount namespace, a container's too)
        root = os.path.join(proc, str(result.pid), "root")
    result.gzip, result.path, result.looks_for, result.why = choose_gzip(
        store, result.version, environment, path_value, root, stream_processor)
    return result
