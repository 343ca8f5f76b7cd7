"""Build the gpuhost agent zipapp: gpuhost plus the pure-Python modules its host side needs.

The agent runs on managed hosts with their own `python3` (3.9 or newer: Amazon Linux 2023 has
3.9), with nothing installed. typer and rich stay behind (typer needs Python >= 3.11), so the
agent's entry point is gpuhost.agent (argparse, JSON output). The archive is byte-for-byte
reproducible: the same sources give the same file, so Ansible's copy stays unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import stat
import tempfile
import zipfile
from pathlib import Path

from gpuhost.model import UsageError
from gpuhost.options import Command, Option, json_flag

# Top-level modules the agent imports besides the standard library. Only their .py files
# travel: compiled accelerators (PyYAML's libyaml binding) cannot load from a zip, and the
# modules fall back to pure Python without them.
CARRIED_MODULES = ("gpuhost", "yaml", "pynvml", "tomli")
OPTIONAL_MODULES = frozenset({"tomli"})
MAIN = b"""import sys

if sys.version_info < (3, 9):
    sys.exit("gpuhost agent needs Python >= 3.9 (found %d.%d)" % sys.version_info[:2])

from gpuhost.agent import main

sys.exit(main())
"""
DEFAULT_OUTPUT = "gpuhost-agent.pyz"
SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _module_files(name: str) -> list[tuple[str, Path]]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        if name in OPTIONAL_MODULES:
            return []
        raise RuntimeError(f"cannot build the agent: module {name!r} is not importable here")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        package_dir = origin.parent
        files = []
        for path in sorted(package_dir.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            files.append((str(Path(name) / path.relative_to(package_dir)), path))
        return files
    return [(origin.name, origin)]


def zipapp_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        entries: list[tuple[str, bytes]] = [("__main__.py", MAIN)]
        for module in CARRIED_MODULES:
            for arcname, path in _module_files(module):
                entries.append((arcname.replace(os.sep, "/"), path.read_bytes()))
        for arcname, data in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return SHEBANG + buffer.getvalue()


OUTPUT_EXAMPLE = "Write a regular file or a new name in an existing directory, e.g. -o /tmp/gpuhost-agent.pyz."
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def output_path(text: str | Path) -> Path:
    """Where the agent may be written: an existing regular file (through a symlink, its target) or a new
    name in an existing directory. Anything else is a UsageError, and nothing is created or opened."""
    raw = str(text)
    if not raw.strip() or raw != raw.strip() or "\0" in raw or raw.endswith("/"):
        raise UsageError(f"--output {raw!r} is not a file name (blank, padded, or ending in /)", OUTPUT_EXAMPLE)
    path = Path(raw)
    try:
        info: os.stat_result | None = path.lstat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"--output {raw}: {exc.strerror}", OUTPUT_EXAMPLE) from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        try:
            path = path.resolve(strict=True)
            info = path.stat()
        except (OSError, RuntimeError):
            raise UsageError(f"--output {raw} is a symlink that leads to no file", OUTPUT_EXAMPLE) from None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"--output {raw} is {_kind(info.st_mode)}, not a regular file", OUTPUT_EXAMPLE)
        return path
    if not path.parent.is_dir():
        raise UsageError(
            f"--output {raw}: the directory {path.parent} does not exist",
            "Create it first (gpuhost zipapp creates no directories), or write elsewhere, "
            "e.g. -o /tmp/gpuhost-agent.pyz.",
        )
    return path


def build_zipapp(output: str | Path) -> tuple[Path, str]:
    """Write the agent to `output` (only when its content changed); return the path written and its sha256.
    `output` is checked by output_path; a symlink's target is replaced, atomically, in its own directory."""
    path = output_path(output)
    data = zipapp_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return path, digest
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), 0o755)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc}", "Check that its directory is writable."
        ) from None
    return path, digest


ZIPAPP = Command(
    cli="zipapp",
    agent="",
    summary="build the agent that roles and fleet checks run on managed hosts",
    options=(
        Option("--output", "Where to write the agent: a regular file (replaced when its content differs) or a new "
               "name in an existing directory. Devices, FIFOs and directories are refused; no directory is created.",
               kind="path", default=DEFAULT_OUTPUT, short="-o"),
        json_flag("path and sha256"),
    ),
    parsers=(build_zipapp,),
)
