"""The files a models manifest asks for: each one's ComfyUI folder, name, size, hash and source key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from gpuhost.comfyui.manifest import load_manifest
from gpuhost.comfyui.models.folders import canonical_folder, check_file_name, split_model_path
from gpuhost.model import UsageError
from gpuhost.options import Option


@dataclass(frozen=True)
class ModelFile:
    folder: str  # ComfyUI's folder name (legacy names mapped)
    name: str  # the path inside the folder, `/`-separated
    size: int
    sha256: Optional[str] = None
    # where it is under the source (relative), by default the folder as the manifest wrote it, then name
    source_key: str = ""

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}"

    def local_path(self, directory: str) -> str:
        return os.path.join(directory, self.folder, *self.name.split("/"))


@dataclass
class Catalog:
    manifest: str
    files: list[ModelFile]
    # entries `gpuhost models` leaves to `gpuhost layers`: globs on a build's commands
    ignored: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def folders(self) -> list[str]:
        return sorted({f.folder for f in self.files})


# `models sync` and `models verify` read the manifest alike
MANIFEST_OPTION = Option(
    "--manifest",
    "The models manifest (the one `gpuhost layers` reads): each entry's path or name, size, ComfyUI folder and "
    "optional sha256.",
    kind="path",
    metavar="FILE",
    required=True,
    example="--manifest models.manifest.yaml",
)


def load_catalog(path: str) -> Catalog:
    """Read a models manifest (the one `gpuhost layers` reads) into the files to sync and verify."""
    manifest = load_manifest(path)
    files: list[ModelFile] = []
    ignored: list[str] = []
    seen: dict[str, str] = {}
    for entry in manifest.entries:
        where = f"{manifest.path}: {entry.key}"
        if entry.glob:
            ignored.append(entry.key)
            continue
        found_folder, found_name = split_model_path(entry.key)
        written = entry.folder or found_folder
        if not written:
            raise UsageError(
                f"{where}: no ComfyUI folder: give the entry `folder:` (checkpoints, loras, vae, ...) or a path "
                "under models/<folder>/",
                "The format is in docs/models.md.",
            )
        folder = canonical_folder(written, where)
        if found_folder is not None:
            name = found_name
        else:
            name = os.path.basename(entry.key) if entry.key.startswith("/") else entry.key
        name = check_file_name(folder, name, where)
        source_key = entry.source or f"{written}/{name}"
        if source_key.startswith("/") or ".." in source_key.split("/"):
            raise UsageError(f"{where}: source {source_key!r} must be relative to the source, without `..`")
        model = ModelFile(folder=folder, name=name, size=entry.expected_bytes, sha256=entry.sha256,
                          source_key=source_key)
        if model.relpath in seen:
            raise UsageError(f"{where}: {model.relpath} is also the file of entry {seen[model.relpath]}")
        seen[model.relpath] = entry.key
        files.append(model)
    if not files:
        raise UsageError(f"{manifest.path}: no model files to sync (only globs, or no entries)",
                         "List each file with `path:` (or a name), `folder:` and `size:`; see docs/models.md.")
    return Catalog(manifest=manifest.path, files=files, ignored=ignored)
