"""`gpuhost models verify DIR`: the manifest's files present, of their size, whole by their header and
their sha256; with --url, also listed by the running ComfyUI (GET /models/<folder>). No source."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from gpuhost.comfyui.models.catalog import MANIFEST_OPTION, Catalog, load_catalog
from gpuhost.comfyui.models.https import check_http_url, get_json
from gpuhost.comfyui.models.local import check_local
from gpuhost.comfyui.models.report import FileResult, ModelsResult, check_directory
from gpuhost.model import UsageError
from gpuhost.options import Command, Option, json_flag
from gpuhost.redact import redact_url
from gpuhost.units import parse_duration

DEFAULT_TIMEOUT = "10s"


@dataclass
class ModelsOptions:
    directory: str
    catalog: Catalog
    hash_files: bool = True
    url: Optional[str] = None
    timeout_s: float = 10.0

    @classmethod
    def parse(cls, *, directory: str, manifest: str, hash_files: bool = True, url: Optional[str] = None,
              timeout: str = DEFAULT_TIMEOUT) -> ModelsOptions:
        check_directory(directory, "DIR")
        if url is not None:
            check_http_url(url, "--url")
        timeout_s = parse_duration(timeout, "--timeout")
        catalog = load_catalog(manifest)
        return cls(directory=directory, catalog=catalog, hash_files=hash_files,
                   url=url.rstrip("/") if url else None, timeout_s=timeout_s)


MODELS_VERIFY = Command(
    cli="models verify",
    agent="models-verify",
    summary="verify model files against a manifest (see gpuhost models verify)",
    options=(
        Option("DIR", "The directory holding the model folders.", kind="name", required=True, dest="directory"),
        MANIFEST_OPTION,
        Option("--url", "Also ask this ComfyUI (GET /models/FOLDER) whether it lists each file.", metavar="URL",
               example="--url http://127.0.0.1:8188"),
        Option("--no-hash", "Skip the sha256 (size and header only: seconds instead of minutes).", kind="flag",
               default=False, example="--no-hash"),
        Option("--timeout", "--url: the deadline per request.", default=DEFAULT_TIMEOUT, metavar="DURATION",
               example="--timeout 30s"),
        json_flag("the result (schema gpuhost.models/v1)"),
    ),
    parsers=(ModelsOptions.parse,),
)


def run(options: ModelsOptions) -> ModelsResult:
    started = time.monotonic()
    result = ModelsResult(command="verify", directory=options.directory, manifest=options.catalog.manifest,
                          ignored=list(options.catalog.ignored), url=options.url or "")
    listed: dict[str, set[str]] = {}
    if options.url:
        for folder in options.catalog.folders():
            names = get_json(f"{options.url}/models/{quote(folder)}", timeout_s=options.timeout_s)
            if not isinstance(names, list):
                raise UsageError(f"{redact_url(options.url)}/models/{folder} is not a list: is that a ComfyUI server?")
            listed[folder] = {str(n).replace("\\", "/") for n in names}
    for model in options.catalog.files:
        path = model.local_path(options.directory)
        state = check_local(model, path, hash_files=options.hash_files)
        if state.ok and options.url and model.name not in listed.get(model.folder, set()):
            result.files.append(FileResult.of(
                model, path, "unlisted",
                problem=f"ComfyUI at {redact_url(options.url)} does not list it in {model.folder} "
                        "(extra_model_paths.yaml?)"))
            continue
        result.files.append(FileResult.of(model, path, state.status, problem=state.problem))
    result.seconds = time.monotonic() - started
    return result
