"""The models manifest: which model files an image (or a models directory) must hold, and how big.

Manifest (YAML or JSON, `models.manifest.yaml` beside the Dockerfile; format in docs/layers.md):

    min_model_bytes: 1MiB          # optional: the threshold for every model layer
    tolerance: 0.0                 # optional: fraction a layer may fall short of its expectation
    models:
      - path: /opt/ComfyUI/models/checkpoints/v1-5-pruned-emaonly.safetensors
        size: 4265380512           # bytes, or with a unit: 4.27GB, 3.97GiB
        folder: checkpoints        # optional: the ComfyUI folder (`gpuhost models`; format in docs/models.md)
        sha256: 6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa   # optional
        source: sd15/v1-5-pruned-emaonly.safetensors  # optional: where under the models source it is
      - match: "*flux1-dev*"        # a glob on the layer's command
        size: 23.8GB

`models` may also be a mapping {path or glob: size}.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost import userfile
from gpuhost.model import UsageError
from gpuhost.units import parse_size

MANIFEST_NAMES = ("models.manifest.yaml", "models.manifest.yml", "models.manifest.json")
# A manifest lists a few hundred models at most; YAML aliases that would expand it past this many
# nodes are an alias bomb (367 bytes can expand to 9^9 strings), refused before anything walks it.
MAX_EXPANDED_NODES = 100_000


def parse_bytes(value: Any, what: str = "size") -> int:
    """A size from a manifest or an option: zero allowed (an empty file is a size too)."""
    return parse_size(value, what, allow_zero=True)


@dataclass
class ManifestEntry:
    key: str  # the path or glob as written
    expected_bytes: int
    glob: bool = False
    matched_layers: list[int] = field(default_factory=list)
    # read by `gpuhost models` (gpuhost.comfyui.models checks folder names against ComfyUI's)
    folder: Optional[str] = None
    sha256: Optional[str] = None
    source: Optional[str] = None

    def matches(self, command: str) -> bool:
        if self.glob:
            return fnmatch.fnmatchcase(command, self.key if self.key.startswith("*") else f"*{self.key}*")
        return self.key in command


@dataclass
class Manifest:
    path: str
    entries: list[ManifestEntry]
    min_model_bytes: Optional[int] = None
    tolerance: float = 0.0


def find_manifest(path: str) -> str:
    """A manifest file, or the models.manifest.* inside a directory (the build context).

    Whatever the path is, load_manifest reads it only if it is a regular file: a FIFO or a device
    is refused by name, not taken for a missing file."""
    if os.path.isdir(path):
        for name in MANIFEST_NAMES:
            candidate = os.path.join(path, name)
            if os.path.lexists(candidate):
                return candidate
        raise UsageError(f"no {' / '.join(MANIFEST_NAMES)} in {path}", "Pass the manifest file itself with --manifest.")
    return path


def load_manifest(path: str) -> Manifest:
    path = find_manifest(path)
    if path.endswith(".json"):
        data = userfile.load_json(path, "manifest", userfile.MANIFEST_MAX)
    else:
        data = _load_yaml(userfile.read_text(path, "manifest", userfile.MANIFEST_MAX), path)
    return manifest_from_data(data, path)


def _load_yaml(text: str, path: str) -> Any:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """safe_load that refuses a document whose aliases expand past MAX_EXPANDED_NODES."""

        def compose_document(self) -> Any:
            node = super().compose_document()
            if node is not None and _expanded_nodes(node, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
                raise UsageError(
                    f"manifest {path}: its YAML aliases expand past {MAX_EXPANDED_NODES} nodes",
                    "Write the models out; a manifest needs no aliases that multiply.",
                )
            return node

    return userfile.parse_yaml(text, f"manifest {path}", path=path, loader=BoundedLoader)


def _expanded_nodes(root: Any, limit: int) -> int:
    """How many nodes the YAML graph under `root` holds with every alias expanded (stops past
    `limit`; a recursive alias counts as past it). Iterative: depth costs no recursion."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, limit + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            return limit + 1
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                return limit + 1
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Any) -> list[Any]:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []  # a scalar
    children: list[Any] = []
    for item in value:
        children.extend(item if isinstance(item, tuple) else (item,))
    return children


def manifest_from_data(data: Any, path: str = "manifest") -> Manifest:
    if not isinstance(data, dict) or "models" not in data:
        raise UsageError(
            f"{path}: expected a mapping with a `models` key", "The format is in docs/layers.md."
        )
    unknown = sorted(str(key)[:40] for key in set(data) - {"models", "min_model_bytes", "tolerance", "version"})
    if unknown:
        raise UsageError(f"{path}: unknown keys {', '.join(unknown[:10])}")
    models = data["models"]
    pairs: list[tuple[str, Any]] = []
    extras: list[dict[str, Optional[str]]] = []
    if isinstance(models, dict):
        pairs = [(_name(k, f"{path}: a models key"), v) for k, v in models.items()]
    elif isinstance(models, list):
        for number, item in enumerate(models, start=1):
            if not isinstance(item, dict) or not (("path" in item) ^ ("match" in item)) or "size" not in item:
                raise UsageError(f"{path}: models entry {number} needs `size` and one of `path` or `match`")
            field_name = "path" if "path" in item else "match"
            pairs.append((_name(item[field_name], f"{path}: models entry {number}: `{field_name}`"), item["size"]))
            extras.append(_entry_extras(item, f"{path}: models entry {number}"))
            if "match" in item:
                pairs[-1] = ("glob:" + pairs[-1][0], pairs[-1][1])
    else:
        raise UsageError(f"{path}: `models` must be a list or a mapping")
    entries = []
    for number, (key, size) in enumerate(pairs):
        glob = key.startswith("glob:") or any(c in key for c in "*?[")
        key = key[5:] if key.startswith("glob:") else key
        if not key:
            raise UsageError(f"{path}: an empty path or pattern")
        expected = parse_bytes(size, f"{path}: {key}")
        if expected <= 0:
            raise UsageError(f"{path}: {key}: the expected size must be positive")
        extra = extras[number] if number < len(extras) else {}
        entries.append(ManifestEntry(key=key, expected_bytes=expected, glob=glob, folder=extra.get("folder"),
                                     sha256=extra.get("sha256"), source=extra.get("source")))
    tolerance = data.get("tolerance", 0.0)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 <= tolerance < 1:
        raise UsageError(f"{path}: tolerance must be a fraction in [0, 1), got {tolerance!r:.60}")
    minimum = data.get("min_model_bytes")
    return Manifest(
        path=path,
        entries=entries,
        min_model_bytes=parse_bytes(minimum, f"{path}: min_model_bytes") if minimum is not None else None,
        tolerance=float(tolerance),
    )


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _name(value: Any, where: str) -> str:
    """A path or glob as written: a non-empty string (YAML's `path:` alone is null, not a name)."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where} must be a non-empty string, got {value!r:.60}")
    return value


def _entry_extras(item: dict[Any, Any], where: str) -> dict[str, Optional[str]]:
    """The optional `folder`, `sha256` and `source` of a list entry, checked for form only."""
    found: dict[str, Optional[str]] = {}
    for name in ("folder", "sha256", "source"):
        value = item.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value or value != value.strip():
            raise UsageError(f"{where}: `{name}` must be a non-empty string without spaces around it, got {value!r}")
        found[name] = value
    sha256 = found.get("sha256")
    if sha256 is not None:
        found["sha256"] = sha256.lower()
        if not _SHA256.fullmatch(found["sha256"] or ""):
            raise UsageError(f"{where}: `sha256` must be 64 hexadecimal digits, got {sha256!r}")
    return found
