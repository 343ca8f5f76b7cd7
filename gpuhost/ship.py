"""Build the gpuhost agent zipapp: gpuhost plus the pure-Python modules its host side needs.

The agent runs on managed hosts with their own `python3` (3.9 or newer: Amazon Linux 2023 has
3.9), with nothing installed. typer and rich stay behind (typer needs Python >= 3.11), so the
agent's entry point is gpuhost.agent (argparse, JSON output). The archive is byte-for-byte
reproducible: the same sources give the same file, so Ansible's copy stays unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import zipfile
from pathlib import Path

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


def build_zipapp(output: Path) -> tuple[Path, str]:
    """Write the agent to `output` (only when its content changed); return path and sha256."""
    data = zipapp_bytes()
    digest = hashlib.sha256(data).hexdigest()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.exists() or output.read_bytes() != data:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.replace(output)
    return output, digest
