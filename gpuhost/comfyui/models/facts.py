"""The models this host was configured with (the record `gpuhost models sync --record` writes, the
comfyui role's /etc/gpuhost/models.json) and the state of each file now: for `gpuhost check`.

Size and header only: a check stays well under a second; `gpuhost models verify` hashes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from gpuhost import userfile
from gpuhost.comfyui.models.catalog import ModelFile
from gpuhost.comfyui.models.local import check_local
from gpuhost.comfyui.models.sync import DEFAULT_RECORD
from gpuhost.redact import redact_url


@dataclass
class ModelFileFacts:
    folder: str
    name: str
    size: int
    status: str  # ok | missing | short | long | corrupt
    problem: str = ""


@dataclass
class ModelsFacts:
    record: str = ""  # the record read; "" when this host has none (no models configured)
    source: str = ""
    directory: str = ""
    files: list[ModelFileFacts] = field(default_factory=list)
    error: str = ""
    # the filesystem of the models directory (its nearest existing parent): free and total bytes
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None


def collect_models(root: str = "/", record: str = DEFAULT_RECORD) -> ModelsFacts:
    path = os.path.join(root, record.lstrip("/"))
    try:
        data = userfile.load_json(path, "", userfile.RECORD_MAX)
    except userfile.UserFileError as exc:
        if exc.missing:
            return ModelsFacts()
        return ModelsFacts(record=record, error=str(exc).replace(path, record, 1))
    facts = ModelsFacts(record=record)
    try:
        facts.source = redact_url(str(data.get("source", "")))
        facts.directory = str(data["directory"])
        entries = list(data["files"])
        models = [
            ModelFile(folder=str(e["folder"]), name=str(e["name"]), size=int(e["size"]),
                      sha256=_optional(e.get("sha256")))
            for e in entries
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        facts.error = f"{record}: not a models record ({type(exc).__name__}: {exc})"
        return facts
    directory = os.path.join(root, facts.directory.lstrip("/"))
    facts.free_bytes, facts.total_bytes = _space(directory, root)
    for model in models:
        state = check_local(model, model.local_path(directory), hash_files=False)
        facts.files.append(ModelFileFacts(model.folder, model.name, model.size, state.status, state.problem))
    return facts


def _space(directory: str, root: str) -> tuple[Optional[int], Optional[int]]:
    """Free (for unprivileged users, as `df` shows it) and total bytes where the directory is or will be."""
    probe = directory
    while not os.path.exists(probe) and len(probe) > len(root.rstrip("/")) + 1:
        probe = os.path.dirname(probe)
    try:
        stats = os.statvfs(probe)
    except OSError:
        return None, None
    return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize


def _optional(value: object) -> Optional[str]:
    return str(value) if value else None
