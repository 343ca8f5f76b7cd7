"""`gpuhost layers IMAGE`: an image's layers, the steps that fetch models, and the ones that failed.

A layer whose command downloads or copies a model (wget, curl, aria2c, `hf download`,
`huggingface-cli download`, hf_hub_download, COPY/ADD into a models path) but weighs 0 B, less than
--min-model-bytes, or less than the user's manifest expects, is a failed download that a build
happily cached (`curl ... || true`, an HTML error page saved as .safetensors). Sizes and commands
come from the Engine API (/images/{name}/history); the total feeds the unpack-time model
(gpuhost.unpack) for the device under Docker's data-root.

The manifest of expected model sizes is read by gpuhost.comfyui.manifest (format in docs/layers.md).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from gpuhost import userfile
from gpuhost.comfyui import registry
from gpuhost.comfyui.entries import EntryCount, count_image_entries, entries_for
from gpuhost.comfyui.manifest import Manifest, ManifestEntry, load_manifest, parse_bytes
from gpuhost.comfyui.registry import LayerDescriptor, Platform, RegistryError, fetch_layer_descriptors
from gpuhost.engine import DOCKER_HOST_OPTION, EngineError, quote_ref
from gpuhost.facts.containerd import collect_containerd, image_store
from gpuhost.facts.decompressor import Decompressor, collect_decompressor
from gpuhost.facts.storage import (
    STORAGE_PROBE_RECORD,
    PathLocation,
    RecordedProbe,
    locate,
    read_recorded_probe,
)
from gpuhost.model import ExitCode, Finding, Severity, UsageError
from gpuhost.options import Command, Option, json_flag
from gpuhost.refs import check_image_reference
from gpuhost.units import MAX_BYTES, format_duration, human_bytes, positive_number
from gpuhost.unpack import (
    PullLayer,
    PullPrediction,
    compression_of,
    default_write_mibs,
    predict_pull,
    predict_unpack_seconds,
)

LAYERS_SCHEMA = "gpuhost.comfyui.layers/v1"
DEFAULT_MIN_MODEL_BYTES = 1024 * 1024
MAX_MIB_S = 1e6  # a device or network rate past any there is

MODEL_EXTENSIONS = ("safetensors", "ckpt", "pt", "pth", "bin", "gguf", "onnx", "sft", "pkl")
MODEL_FILE_RE = re.compile(r"\.(?:" + "|".join(MODEL_EXTENSIONS) + r")\b", re.IGNORECASE)
MODELS_PATH_RE = re.compile(r"(?:^|[\s/=\"':])(?:models?|checkpoints|loras|vae|unet|diffusion_models|clip|"
                            r"text_encoders|controlnet|upscale_models|embeddings)/", re.IGNORECASE)
MODEL_HOST_RE = re.compile(r"https?://(?:[\w.-]*\.)?(?:huggingface\.co|hf\.co|civitai\.com)/", re.IGNORECASE)
MODEL_DOWNLOADER_RE = re.compile(
    r"\bhf\s+download\b|\bhuggingface-cli\s+download\b|\bhf_hub_download\b|\bsnapshot_download\b|"
    r"\bcomfy\s+model\s+download\b",
    re.IGNORECASE,
)
FETCH_TOOL_RE = re.compile(r"\b(wget|curl|aria2c)\b")


# --- layers --------------------------------------------------------------------------------


@dataclass
class Layer:
    index: int  # 1 = the base-most layer
    id: str
    created_by: str
    instruction: str
    command: str
    size: int
    model_step: bool = False
    model_why: str = ""
    expected_bytes: Optional[int] = None
    manifest_keys: list[str] = field(default_factory=list)
    severity: Severity = Severity.OK
    problem: str = ""
    # from the registry's manifest: "gzip", "zstd", "none"; "" when the registry was not asked
    compression: str = ""
    compressed_bytes: Optional[int] = None


def split_created_by(created_by: str) -> tuple[str, str]:
    """(instruction, command) of a history CreatedBy, for the classic builder and BuildKit."""
    text = created_by.strip()
    if text.endswith("# buildkit"):
        text = text[: -len("# buildkit")].rstrip()
    nop = re.match(r"^(?:\|\d+ (?:\S+=\S* )*)?/bin/sh -c #\(nop\)\s+(?P<rest>.*)$", text, re.DOTALL)
    if nop:
        rest = nop.group("rest").strip()
        word, _, args = rest.partition(" ")
        return word.upper(), args.strip()
    run = re.match(r"^(?:\|\d+ (?:\S+=\S* )*)?(?P<shell>/bin/(?:ba)?sh -c )(?P<cmd>.*)$", text, re.DOTALL)
    if run:
        return "RUN", run.group("cmd").strip()
    word, _, args = text.partition(" ")
    if word.isupper() and word.isalpha():
        args = args.strip()
        if word == "RUN":
            shell = re.match(r"^(?:\|\d+ (?:\S+=\S* )*)?/bin/(?:ba)?sh -c (?P<cmd>.*)$", args, re.DOTALL)
            args = shell.group("cmd").strip() if shell else args
        return word, args
    return ("", text) if text else ("", "")


def _copy_destination(command: str) -> str:
    classic = re.search(r" in (?P<dest>\S+)\s*$", command)
    if classic:
        return classic.group("dest")
    try:
        tokens = [t for t in shlex.split(command) if not t.startswith("--")]
    except ValueError:
        tokens = command.split()
    return tokens[-1] if tokens else ""


def classify(instruction: str, command: str) -> tuple[bool, str]:
    """Whether a layer fetches or copies a model, and why we think so."""
    if instruction in ("COPY", "ADD"):
        destination = _copy_destination(command)
        if MODEL_FILE_RE.search(command) or MODELS_PATH_RE.search(destination + "/") or "models" in destination:
            source = "a URL" if instruction == "ADD" and "://" in command else "files"
            return True, f"{instruction} of {source} into {destination}"
        return False, ""
    if instruction != "RUN":
        return False, ""
    downloader = MODEL_DOWNLOADER_RE.search(command)
    if downloader:
        return True, f"downloads with {' '.join(downloader.group(0).split())}"
    tool = FETCH_TOOL_RE.search(command)
    if tool and (MODEL_FILE_RE.search(command) or MODELS_PATH_RE.search(command) or MODEL_HOST_RE.search(command)):
        return True, f"downloads a model with {tool.group(1)}"
    return False, ""


def analyze(history: list[dict[str, Any]], min_model_bytes: int, manifest: Optional[Manifest] = None) -> list[Layer]:
    """Layers from an Engine API history (newest first), oldest first, each judged."""
    layers: list[Layer] = []
    for index, entry in enumerate(reversed(history), start=1):
        created_by = str(entry.get("CreatedBy") or "")
        instruction, command = split_created_by(created_by)
        layer = Layer(
            index=index,
            id=str(entry.get("Id") or ""),
            created_by=created_by,
            instruction=instruction,
            command=command,
            size=_byte_count(entry.get("Size")),
        )
        layer.model_step, layer.model_why = classify(instruction, command)
        if manifest is not None:
            for manifest_entry in manifest.entries:
                if instruction in ("RUN", "COPY", "ADD") and manifest_entry.matches(command):
                    _expect(layer, manifest_entry)
        layers.append(layer)
    if manifest is not None:
        _match_by_destination(layers, manifest)
    for layer in layers:
        _judge(layer, min_model_bytes, manifest.tolerance if manifest else 0.0)
    return layers


def _byte_count(value: Any) -> int:
    """A size the Engine API reported; anything but a whole number of bytes reads as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BYTES else 0


def _expect(layer: Layer, entry: ManifestEntry) -> None:
    entry.matched_layers.append(layer.index)
    layer.manifest_keys.append(entry.key)
    layer.expected_bytes = (layer.expected_bytes or 0) + entry.expected_bytes
    if not layer.model_step:
        layer.model_step, layer.model_why = True, "named in the manifest"


def _match_by_destination(layers: list[Layer], manifest: Manifest) -> None:
    """The classic builder records `COPY file:<sha> in /dest/`, without the file's name: a path
    entry no command names goes to the one COPY/ADD layer whose destination is that file or its
    directory (never when several layers copy there: that would be a guess)."""
    for entry in manifest.entries:
        if entry.matched_layers or entry.glob:
            continue
        wanted = {entry.key.rstrip("/"), os.path.dirname(entry.key.rstrip("/"))}
        candidates = [
            layer
            for layer in layers
            if layer.instruction in ("COPY", "ADD") and _copy_destination(layer.command).rstrip("/") in wanted
        ]
        if len(candidates) == 1:
            _expect(candidates[0], entry)


def _judge(layer: Layer, min_model_bytes: int, tolerance: float) -> None:
    if not layer.model_step:
        return
    if layer.size == 0:
        layer.severity = Severity.FAIL
        layer.problem = "0 B: the step that should add a model added nothing (a failed download or an empty COPY)"
    elif layer.expected_bytes is not None and layer.size < layer.expected_bytes * (1 - tolerance):
        layer.severity = Severity.FAIL
        layer.problem = (
            f"{human_bytes(layer.size)} ({layer.size} B), below the {human_bytes(layer.expected_bytes)} "
            f"({layer.expected_bytes} B) the manifest expects for {', '.join(layer.manifest_keys)}: "
            "a truncated download or the wrong file"
        )
    elif layer.size < min_model_bytes:
        layer.severity = Severity.FAIL
        layer.problem = (
            f"{human_bytes(layer.size)} ({layer.size} B), below --min-model-bytes {human_bytes(min_model_bytes)}: "
            "an error page or a truncated download saved under a model's name?"
        )


# --- the report -----------------------------------------------------------------------------


@dataclass
class LayersReport:
    image: str
    image_id: str
    layers: list[Layer]
    min_model_bytes: int
    total_bytes: int
    model_bytes: int
    data_root: str = ""
    data_root_device: str = ""
    data_root_class: str = ""
    write_mib_s: float = 0.0
    write_source: str = ""
    predicted_unpack_s: Optional[float] = None
    manifest: Optional[Manifest] = None
    # the pull: layer descriptors from the registry, Docker's measured rates, the split prediction
    registry_layers: list[LayerDescriptor] = field(default_factory=list)
    registry_error: str = ""
    decompress_source: str = ""
    pull: Optional[PullPrediction] = None
    # the image store ("classic" or "containerd"), the directory its layers land in, the probe
    # record read, what decompresses gzip layers here, and each layer's files
    image_store: str = ""
    store_root: str = ""
    probe_record: str = STORAGE_PROBE_RECORD
    decompressor: Optional[Decompressor] = None
    entries: Optional[EntryCount] = None

    @property
    def flagged(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.severity is Severity.FAIL]

    @property
    def unmatched(self) -> list[ManifestEntry]:
        return [e for e in self.manifest.entries if not e.matched_layers] if self.manifest else []

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILING if self.flagged else ExitCode.OK

    def findings(self) -> list[Finding]:
        findings = []
        for layer in self.flagged:
            findings.append(
                Finding(
                    "layers.model-size",
                    "layers",
                    Severity.FAIL,
                    f"{self.image} layer {layer.index} ({layer.instruction} {_short(layer.command)}): {layer.problem}",
                    "Make the step fail when the download fails (curl -f, wget without `|| true`, set -e), check the "
                    "URL and token, then rebuild without cache.",
                    {"layer": layer.index, "id": layer.id, "size": layer.size, "expected_bytes": layer.expected_bytes},
                )
            )
        for entry in self.unmatched:
            findings.append(
                Finding(
                    "layers.manifest-unmatched",
                    "layers",
                    Severity.WARN,
                    f"{self.image}: the manifest expects {entry.key} ({human_bytes(entry.expected_bytes)}) but no "
                    "layer's command names it",
                    "Fix the path or pattern in the manifest, or add the step that fetches it.",
                    {"key": entry.key, "expected_bytes": entry.expected_bytes},
                )
            )
        return findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": LAYERS_SCHEMA,
            "image": self.image,
            "image_id": self.image_id,
            "total_bytes": self.total_bytes,
            "model_bytes": self.model_bytes,
            "min_model_bytes": self.min_model_bytes,
            "manifest": self.manifest.path if self.manifest else None,
            "layers": [
                {
                    "index": layer.index,
                    "id": layer.id,
                    "instruction": layer.instruction,
                    "command": layer.command,
                    "size": layer.size,
                    "model_step": layer.model_step,
                    "model_why": layer.model_why,
                    "expected_bytes": layer.expected_bytes,
                    "manifest_keys": layer.manifest_keys,
                    "severity": layer.severity.value,
                    "problem": layer.problem,
                    "compression": layer.compression,
                    "compressed_bytes": layer.compressed_bytes,
                }
                for layer in self.layers
            ],
            "flagged": [layer.index for layer in self.flagged],
            "unmatched_manifest_entries": [e.key for e in self.unmatched],
            "unpack": {
                "image_store": self.image_store,
                "store_root": self.store_root,
                "data_root": self.data_root,
                "device": self.data_root_device,
                "device_class": self.data_root_class,
                "write_mib_s": self.write_mib_s,
                "write_source": self.write_source,
                "predicted_s": None if self.predicted_unpack_s is None else round(self.predicted_unpack_s, 1),
                "predicted": None if self.predicted_unpack_s is None else format_duration(self.predicted_unpack_s),
            },
            "pull": {
                "registry_layers": [
                    {"digest": d.digest, "compression": compression_of(d.media_type), "compressed_bytes": d.size}
                    for d in self.registry_layers
                ],
                "registry_error": self.registry_error,
                "decompress_source": self.decompress_source,
                "decompressor": None if self.decompressor is None else self.decompressor.to_dict(),
                "entries": None if self.entries is None else self.entries.to_dict(),
                "predicted": None if self.pull is None else self.pull.to_dict(),
            },
            "findings": [f.to_dict() for f in self.findings()],
            "exit_code": int(self.exit_code),
        }


def _short(command: str, limit: int = 70) -> str:
    text = " ".join(command.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class LayersOptions:
    """What `gpuhost layers` holds an image to, from the options as typed."""

    min_model_bytes: Optional[int] = None
    manifest: Optional[Manifest] = None
    write_mib_s: Optional[float] = None
    download_mib_s: Optional[float] = None
    probe_record: str = STORAGE_PROBE_RECORD
    count_entries: bool = True

    @classmethod
    def parse(
        cls,
        manifest: Optional[str] = None,
        min_model_bytes: Optional[str] = None,
        write_mibs: Optional[float] = None,
        download_mibs: Optional[float] = None,
        probe_record: Optional[str] = None,
        no_entries: bool = False,
    ) -> LayersOptions:
        return cls(
            min_model_bytes=parse_bytes(min_model_bytes, "--min-model-bytes") if min_model_bytes is not None else None,
            manifest=load_manifest(manifest) if manifest else None,
            write_mib_s=(
                positive_number(write_mibs, "--write-mibs", maximum=MAX_MIB_S) if write_mibs is not None else None
            ),
            download_mib_s=(
                positive_number(download_mibs, "--download-mibs", maximum=MAX_MIB_S) if download_mibs is not None
                else None
            ),
            probe_record=check_probe_record(probe_record) if probe_record is not None else STORAGE_PROBE_RECORD,
            count_entries=not no_entries,
        )


def check_probe_record(path: str) -> str:
    """An absolute path to a storage probe record (`gpuhost storage probe --record`), read and
    checked now: a missing, unreadable or foreign file is bad input, not a prediction without it."""
    if not path or path != path.strip() or not os.path.isabs(path) or any(ord(c) < 32 for c in path):
        raise UsageError(f"--probe-record must be an absolute path without surrounding spaces, got {path[:200]!r}",
                         f"Example: --probe-record {STORAGE_PROBE_RECORD}")
    data = userfile.load_json(path, "--probe-record", userfile.RECORD_MAX)
    if not isinstance(data, dict) or not str(data.get("schema") or "").startswith("gpuhost.storage-probe/"):
        raise UsageError(f"--probe-record {path}: not a storage probe record (gpuhost storage probe --record)")
    return os.path.normpath(path)


LAYERS = Command(
    cli="layers",
    agent="",
    summary="show an image's layers and flag the model downloads that produced nothing or too little",
    options=(
        Option("IMAGE", "An image on this Docker host (name:tag, name@digest, id).", kind="name", required=True),
        Option("--manifest", "Expected model sizes: a models.manifest.yaml/.json, or the build context directory "
               "that holds one (the format is in docs/layers.md).", kind="path",
               example="--manifest docker/comfyui/"),
        Option("--min-model-bytes", "A model layer smaller than this is a failed download. Default: the manifest's "
               "min_model_bytes, else 1MiB.", metavar="SIZE", example="--min-model-bytes 100MB"),
        Option("--write-mibs", "The data-root device's sustained write throughput for the unpack prediction. "
               "Default: gpuhost.unpack's figure for the device class under Docker's data-root.", kind="number",
               metavar="MiB/s", minimum=0, maximum=MAX_MIB_S, example="--write-mibs 1000"),
        Option("--download-mibs", "How fast this host downloads from the image's registry, for the pull "
               "prediction's download part. Default: left out (a registry on this network or a pull-through "
               "cache).", kind="number", metavar="MiB/s", minimum=0, maximum=MAX_MIB_S,
               example="--download-mibs 250"),
        Option("--probe-record", "The storage probe record to predict with (`gpuhost storage probe --unpack "
               "--record PATH`): its write rate counts when it measured the disk the image store is on. Default: "
               f"{STORAGE_PROBE_RECORD}.", kind="path", metavar="PATH",
               example=f"--probe-record {STORAGE_PROBE_RECORD}"),
        Option("--no-entries", "Do not count each layer's files for the pull prediction (counting them: the "
               "classic store reads the unpacked layer directories, about a second per 100,000 files; the "
               "containerd store decompresses the compressed blobs to read them; needs root).", kind="flag",
               default=False),
        DOCKER_HOST_OPTION,
        json_flag("the report (schema gpuhost.comfyui.layers/v1)"),
    ),
    parsers=(LayersOptions.parse,),
)


def image_layers(
    client: Any,
    image: str,
    min_model_bytes: Optional[int] = None,
    manifest: Optional[Manifest] = None,
    write_mib_s: Optional[float] = None,
    root: str = "/",
    download_mib_s: Optional[float] = None,
    probe_record: str = STORAGE_PROBE_RECORD,
    count_entries: bool = True,
) -> LayersReport:
    """Read IMAGE's history and inspect through the Engine API (an EngineClient) and judge it."""

    check_image_reference(image, "IMAGE")  # before the Engine API is asked: `../../info` names another path
    try:
        inspect = client.get(f"/images/{quote_ref(image)}/json")
        history = client.get(f"/images/{quote_ref(image)}/history")
    except EngineError as exc:
        if exc.status == 404:
            raise UsageError(f"no image {image!r} on this Docker host",
                             "List images with `docker images`; pull or build it first.") from exc
        raise
    threshold = min_model_bytes
    if threshold is None:
        threshold = DEFAULT_MIN_MODEL_BYTES
        if manifest is not None and manifest.min_model_bytes is not None:
            threshold = manifest.min_model_bytes
    layers = analyze(list(history or []), threshold, manifest)
    total = _byte_count(inspect.get("Size")) or sum(layer.size for layer in layers)
    report = LayersReport(
        image=image,
        image_id=str(inspect.get("Id") or ""),
        layers=layers,
        min_model_bytes=threshold,
        total_bytes=total,
        model_bytes=sum(layer.size for layer in layers if layer.model_step),
        manifest=manifest,
    )
    info = client.get("/info") or {}
    report.data_root = str(info.get("DockerRootDir") or "")
    report.image_store = image_store(info)
    # where the layers land: data-root, or containerd's root with the containerd store
    report.store_root = collect_containerd(root).root_dir if report.image_store == "containerd" else report.data_root
    location = locate(os.path.join(root, report.store_root.lstrip("/")), root) if report.store_root else None
    if location is not None:
        report.data_root_device = location.device or location.source
        report.data_root_class = location.device_class or "other"
    probe = read_recorded_probe(root, probe_record)
    report.probe_record = probe_record
    if write_mib_s is not None:
        if write_mib_s <= 0:
            raise UsageError("--write-mibs must be positive")
        report.write_mib_s, report.write_source = write_mib_s, "--write-mibs"
    elif probe is not None and probe.write_mib_s > 0 and location is not None and _same_disk(probe, location):
        report.write_mib_s = probe.write_mib_s
        report.write_source = f"recorded storage probe of {probe.mountpoint or probe.path} ({probe_record})"
    else:
        report.write_mib_s = default_write_mibs(report.data_root_class or "other")
        report.write_source = f"default for {report.data_root_class or 'other'} devices (gpuhost.unpack)"
        if probe is not None and probe.write_mib_s > 0:
            report.write_source += (f"; the recorded probe measured {probe.mountpoint or probe.path}, not "
                                    f"{location.mountpoint if location else report.store_root}")
    report.predicted_unpack_s = predict_unpack_seconds(report.total_bytes, report.write_mib_s)
    try:
        version = client.get("/version") or {}
    except EngineError:
        version = {}
    report.decompressor = collect_decompressor(info, version, getattr(client, "host", ""), root,
                                                 proc=os.path.join(root, "proc"))
    if count_entries:
        report.entries = count_image_entries(inspect, info, root)
    _predict_pull(report, inspect, probe, download_mib_s)
    return report


def _same_disk(probe: RecordedProbe, location: PathLocation) -> bool:
    """Whether the recorded probe measured the filesystem `location` is on."""
    if probe.mountpoint and location.mountpoint:
        return probe.mountpoint == location.mountpoint and (not probe.device or probe.device == location.device)
    return bool(probe.device) and probe.device == location.device


def _probe_notes(report: LayersReport, probe: RecordedProbe) -> list[str]:
    """What makes the recorded rates another host's state than this one's: the store or the
    gzip decompressor changed since the probe."""
    notes = []
    if probe.image_store and probe.image_store != report.image_store:
        notes.append(f"the probe measured the {probe.image_store} image store, Docker now uses the "
                     f"{report.image_store} one: run the probe again")
    now = report.decompressor.gzip if report.decompressor is not None else ""
    if probe.gzip_decompressor and now and probe.gzip_decompressor != now:
        notes.append(f"the probe's gzip layers were decompressed by {probe.gzip_decompressor}, this host's "
                     f"{report.decompressor.process if report.decompressor else 'daemon'} now uses {now}: "
                     "run the probe again (after restarting the daemon, which looks for it once)")
    if not probe.gzip_decompressor:
        notes.append("the probe did not record its gzip decompressor (recorded before gpuhost said it)")
    return notes


def _predict_pull(
    report: LayersReport, inspect: dict[str, Any], probe: Optional[RecordedProbe],
    download_mib_s: Optional[float] = None,
) -> None:
    """Each layer's compression from the registry the image came from, and the pull's time split
    into download, decompression and write with Docker's rates from the recorded storage probe."""
    architecture = inspect.get("Architecture")
    image_platform = (
        Platform(str(inspect.get("Os") or "linux"), architecture, str(inspect.get("Variant") or ""))
        if isinstance(architecture, str) and architecture
        else None
    )
    repo_digests = inspect.get("RepoDigests")
    repo_digests = repo_digests if isinstance(repo_digests, list) else []
    started = time.monotonic()  # one deadline for all the image's registries
    for repo_digest in repo_digests:
        left = registry.DEFAULT_DEADLINE_S - (time.monotonic() - started)
        if left <= 0:
            break
        try:
            report.registry_layers = fetch_layer_descriptors(
                str(repo_digest), deadline_s=left, image_platform=image_platform
            )
            report.registry_error = ""
            break
        except RegistryError as exc:
            report.registry_error = f"{str(repo_digest)[:200]}: {str(exc)[:300]}"
    if not repo_digests:
        report.registry_error = "the image came from no registry (built or loaded here)"
    # history lists empty steps too; the layers with content pair with the manifest's in order
    with_content = [layer for layer in report.layers if layer.size > 0]
    if report.registry_layers and len(with_content) == len(report.registry_layers):
        for layer, descriptor in zip(with_content, report.registry_layers):
            layer.compression = compression_of(descriptor.media_type)
            layer.compressed_bytes = descriptor.size
    rates = dict(probe.unpack_rates_mib_s) if probe is not None else {}
    if not rates and probe is not None and probe.unpack_mib_s:
        rates = {"none": probe.unpack_mib_s}
    if rates and probe is not None:
        report.decompress_source = "; ".join([f"recorded storage probe ({report.probe_record})",
                                              *_probe_notes(report, probe)])
    else:
        report.decompress_source = (
            f"not measured: no {report.probe_record} with unpack rates (gpuhost storage probe --unpack "
            f"--record {report.probe_record}); write time only"
        )
        if download_mib_s is None:
            return
    pull_layers = [
        PullLayer(layer.compression or "unknown", layer.compressed_bytes or layer.size, layer.size)
        for layer in report.layers
        if layer.size > 0
    ]
    counted = report.entries
    if counted is not None and counted.per_layer:
        paired = entries_for(counted, len(pull_layers))
        if paired is not None:
            pull_layers = [replace(layer, entries=n) for layer, n in zip(pull_layers, paired)]
        else:  # history and the store count layers differently: the total still counts
            pull_layers.append(PullLayer("none", 0, 0, entries=counted.total))
    per_entry = probe.per_entry_us if probe is not None else None
    report.pull = predict_pull(pull_layers, report.write_mib_s, rates, download_mib_s, per_entry)
