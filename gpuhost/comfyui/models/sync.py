"""`gpuhost models sync`: copy a manifest's model files from S3 or http(s) into ComfyUI's folders.

Every file is fetched as parallel ranged GETs into NAME.part, beside which NAME.part.json records
the source's size and version and the parts already written (each made durable before it is
recorded). A later run resumes a .part whose source is unchanged, fetching only the parts it lacks.
The whole file is fsynced, checked (size, its format's header, sha256 when the manifest gives one)
and only then renamed to NAME. A file already whole is not fetched again.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gpuhost.comfyui.models.catalog import Catalog, ModelFile, load_catalog
from gpuhost.comfyui.models.https import HttpSource, check_http_url
from gpuhost.comfyui.models.local import (
    check_local,
    default_models_dir,
    sha256_of,
    write_json_atomic,
    write_stamp,
)
from gpuhost.comfyui.models.report import SCHEMA, FileResult, ModelsResult, Prediction, check_directory
from gpuhost.comfyui.models.safetensors import check_model_file
from gpuhost.comfyui.models.source import ChangedObject, MissingObject, RemoteObject, Source, TransientError
from gpuhost.facts.storage import locate
from gpuhost.model import UsageError
from gpuhost.redact import redact_url
from gpuhost.units import MIB, parse_duration, parse_size
from gpuhost.unpack import default_write_mibs

PART_STATE_SUFFIX = ".part.json"
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 1 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
DEFAULT_NETWORK_GBPS = 10.0
RECORD_SCHEMA = "gpuhost.models.record/v1"
DEFAULT_RECORD = "/etc/gpuhost/models.json"


@dataclass
class SyncOptions:
    source: str
    catalog: Catalog
    directory: str
    concurrency: int = 16
    part_size: int = DEFAULT_PART_SIZE
    region: Optional[str] = None
    profile: Optional[str] = None
    endpoint_url: Optional[str] = None
    ca_bundle: Optional[str] = None
    timeout_s: float = 60.0
    attempts: int = 5
    dry_run: bool = False
    network_gbps: float = DEFAULT_NETWORK_GBPS
    record: Optional[str] = None

    @classmethod
    def parse(
        cls,
        *,
        source: str,
        manifest: str,
        to: Optional[str] = None,
        concurrency: int = 16,
        part_size: str = "16MiB",
        region: Optional[str] = None,
        profile: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        ca_bundle: Optional[str] = None,
        timeout: str = "60s",
        attempts: int = 5,
        dry_run: bool = False,
        network_gbps: float = DEFAULT_NETWORK_GBPS,
        record: Optional[str] = None,
    ) -> SyncOptions:
        """The options as typed (CLI or agent), all checked before the source is contacted."""
        if not isinstance(source, str) or source != source.strip() or not source:
            raise UsageError(f"source {redact_url(source)!r}: give s3://BUCKET/PREFIX or an https:// base URL")
        if source.startswith("s3://"):
            from gpuhost.comfyui.models.s3 import parse_s3_url

            parse_s3_url(source)
        else:
            check_http_url(source)
        if endpoint_url is not None:
            check_http_url(endpoint_url, "--endpoint-url")
        if ca_bundle is not None and not os.path.isfile(ca_bundle):
            raise UsageError(f"--ca-bundle {ca_bundle!r}: no such file")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 256:
            raise UsageError(f"--concurrency must be 1 to 256, got {concurrency!r}", "Example: --concurrency 32")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
            raise UsageError(f"--attempts must be 1 to 20, got {attempts!r}", "Example: --attempts 5")
        part = parse_size(part_size, "--part-size")
        if not MIN_PART_SIZE <= part <= MAX_PART_SIZE:
            raise UsageError(f"--part-size must be 1MiB to 5GiB, got {part_size!r}", "Example: --part-size 16MiB")
        if not isinstance(network_gbps, (int, float)) or isinstance(network_gbps, bool) or \
                not (0 < network_gbps <= 3200):  # NaN fails this too
            raise UsageError(f"--network-gbps must be above 0 and at most 3200, got {network_gbps!r}",
                             "Example: --network-gbps 25")
        timeout_s = parse_duration(timeout, "--timeout")
        catalog = load_catalog(manifest)
        directory = check_directory(to) if to is not None else default_models_dir()
        if record is not None:
            check_directory(record, "--record")
        return cls(
            source=source, catalog=catalog, directory=directory, concurrency=concurrency, part_size=part,
            region=region, profile=profile, endpoint_url=endpoint_url, ca_bundle=ca_bundle, timeout_s=timeout_s,
            attempts=attempts, dry_run=dry_run, network_gbps=float(network_gbps), record=record,
        )

    def open_source(self) -> Source:
        if self.source.startswith("s3://"):
            from gpuhost.comfyui.models.s3 import S3Source

            return S3Source(self.source, region=self.region, profile=self.profile, endpoint_url=self.endpoint_url,
                            connections=self.concurrency + 4, timeout_s=self.timeout_s, attempts=self.attempts)
        return HttpSource(self.source, timeout_s=self.timeout_s, ca_bundle=self.ca_bundle)


@dataclass
class SyncProgress:
    total_bytes: int = 0
    done_bytes: int = 0
    files_total: int = 0
    files_done: int = 0
    current: str = ""


ProgressCallback = Callable[[SyncProgress], None]


@dataclass
class _Job:
    model: ModelFile
    path: str
    remote: RemoteObject
    parts: list[tuple[int, int]]
    done: set[int]
    fd: int = -1
    resumed_bytes: int = 0
    fetched_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    left: int = 0
    result: Optional[FileResult] = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def part_path(self) -> str:
        return self.path + ".part"

    @property
    def state_path(self) -> str:
        return self.path + PART_STATE_SUFFIX


def _parts(size: int, part_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + part_size, size)) for start in range(0, size, part_size)] or [(0, 0)]


def _read_part_state(job: _Job, part_size: int) -> set[int]:
    """The parts an earlier run wrote, when its source object is the one there now."""
    import json

    try:
        with open(job.state_path, encoding="utf-8") as fh:
            state = json.load(fh)
        part_bytes = os.path.getsize(job.part_path)
    except (OSError, ValueError):
        return set()
    if not isinstance(state, dict) or state.get("version") != job.remote.version or \
            state.get("size") != job.remote.size or state.get("part_size") != part_size or \
            part_bytes > job.remote.size:
        return set()
    done = state.get("done")
    if not isinstance(done, list):
        return set()
    return {i for i in done if isinstance(i, int) and 0 <= i < len(job.parts) and job.parts[i][1] <= part_bytes}


def _save_part_state(job: _Job, part_size: int) -> None:
    write_json_atomic(job.state_path, {
        "source": job.remote.key, "version": job.remote.version, "size": job.remote.size,
        "part_size": part_size, "done": sorted(job.done),
    })


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Run:
    def __init__(self, options: SyncOptions, source: Source, on_progress: Optional[ProgressCallback]) -> None:
        self.options = options
        self.source = source
        self.on_progress = on_progress
        self.progress = SyncProgress()
        self.lock = threading.Lock()
        self.abort = threading.Event()

    def report(self, name: str = "", add_bytes: int = 0, add_file: bool = False) -> None:
        with self.lock:
            self.progress.done_bytes += add_bytes
            self.progress.files_done += int(add_file)
            if name:
                self.progress.current = name
            if self.on_progress is not None:
                self.on_progress(self.progress)

    def fetch_part(self, job: _Job, index: int) -> None:
        start, end = job.parts[index]
        offset = start
        for attempt in range(1, self.options.attempts + 1):
            if self.abort.is_set() or job.result is not None:
                return
            try:
                for chunk in self.source.read_range(job.remote, offset, end):
                    os.pwrite(job.fd, chunk, offset)
                    offset += len(chunk)
                    with job.lock:
                        job.fetched_bytes += len(chunk)
                    self.report(job.model.relpath, add_bytes=len(chunk))
                break
            except TransientError as exc:
                if attempt == self.options.attempts:
                    self.fail(job, f"gave up after {attempt} attempts: {exc}")
                    return
                time.sleep(min(10.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random()))
            except (MissingObject, ChangedObject) as exc:
                self.fail(job, str(exc), keep_part=False)
                return
        with job.lock:
            if job.result is not None:
                return
            os.fdatasync(job.fd)  # the part is on disk before the state says so
            job.done.add(index)
            _save_part_state(job, self.options.part_size)
            job.left -= 1
            last = job.left == 0
        if last:
            self.finish(job)

    def fail(self, job: _Job, problem: str, keep_part: bool = True) -> None:
        with job.lock:
            if job.result is not None:
                return
            job.result = FileResult.of(job.model, job.path, "failed", problem=problem,
                                       fetched=job.fetched_bytes, resumed=job.resumed_bytes,
                                       seconds=time.monotonic() - job.started)
            if job.fd >= 0:
                os.close(job.fd)
                job.fd = -1
        if not keep_part:
            _remove(job.part_path, job.state_path)
        self.report(add_file=True)

    def finish(self, job: _Job) -> None:
        os.fsync(job.fd)
        os.close(job.fd)
        job.fd = -1
        size = os.path.getsize(job.part_path)
        problem = "" if size == job.model.size else f"{size} bytes of {job.model.size}"
        problem = problem or check_model_file(job.part_path, name=job.path)
        digest = ""
        if not problem and job.model.sha256:
            digest = sha256_of(job.part_path)
            if digest != job.model.sha256:
                problem = f"sha256 {digest[:16]}... is not the manifest's {job.model.sha256[:16]}..."
        if problem:
            _remove(job.part_path, job.state_path)
            job.result = FileResult.of(job.model, job.path, "failed", problem=f"the source's copy is bad: {problem}",
                                       fetched=job.fetched_bytes, resumed=job.resumed_bytes,
                                       seconds=time.monotonic() - job.started)
        else:
            os.replace(job.part_path, job.path)
            _remove(job.state_path)
            _fsync_dir(os.path.dirname(job.path))
            if digest:
                write_stamp(job.path, digest)
            job.result = FileResult.of(job.model, job.path, "resumed" if job.resumed_bytes else "fetched",
                                       fetched=job.fetched_bytes, resumed=job.resumed_bytes,
                                       seconds=time.monotonic() - job.started)
        self.report(add_file=True)


def run(options: SyncOptions, on_progress: Optional[ProgressCallback] = None) -> ModelsResult:
    started = time.monotonic()
    result = ModelsResult(command="sync", source=options.source, directory=options.directory,
                          manifest=options.catalog.manifest, dry_run=options.dry_run,
                          ignored=list(options.catalog.ignored))
    todo: list[tuple[ModelFile, str]] = []
    for model in options.catalog.files:
        path = model.local_path(options.directory)
        state = check_local(model, path, trust_stamp=True)
        if state.ok:
            result.files.append(FileResult.of(model, path, "present" if options.dry_run else "skipped"))
        else:
            todo.append((model, path))
    source = options.open_source() if todo else None
    try:
        jobs = _plan_jobs(options, source, todo, result) if source is not None else []
        if options.dry_run:
            for job in jobs:
                held = sum(job.parts[i][1] - job.parts[i][0] for i in job.done)
                result.files.append(FileResult.of(job.model, job.path, "would-resume" if held else "would-fetch",
                                                  fetched=job.remote.size - held, resumed=held))
            result.prediction = predict(options, sum(f.bytes_fetched for f in result.files))
        elif jobs and source is not None:
            _fetch(options, source, jobs, on_progress)
            result.files.extend(job.result for job in jobs if job.result is not None)
    finally:
        if source is not None:
            source.close()
    order = {m.relpath: i for i, m in enumerate(options.catalog.files)}
    result.files.sort(key=lambda f: order.get(f.relpath, 0))
    result.seconds = time.monotonic() - started
    if options.record and not options.dry_run:
        record(options)
    return result


def _plan_jobs(options: SyncOptions, source: Source, todo: list[tuple[ModelFile, str]],
               result: ModelsResult) -> list[_Job]:
    def stat(item: tuple[ModelFile, str]) -> tuple[ModelFile, str, Any]:
        model, path = item
        for attempt in range(1, options.attempts + 1):
            try:
                return model, path, source.stat(model.source_key)
            except MissingObject as exc:
                return model, path, exc
            except TransientError as exc:
                if attempt == options.attempts:
                    return model, path, exc
                time.sleep(min(10.0, 0.25 * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(max_workers=min(options.concurrency, 16)) as pool:
        answers = list(pool.map(stat, todo))
    jobs = []
    for model, path, answer in answers:
        if isinstance(answer, Exception):
            result.files.append(FileResult.of(model, path, "failed", problem=str(answer)))
            continue
        if answer.size != model.size:
            result.files.append(FileResult.of(
                model, path, "failed",
                problem=f"the source has {answer.size} bytes, the manifest says {model.size}: fix one of them"))
            continue
        job = _Job(model=model, path=path, remote=answer, parts=_parts(answer.size, options.part_size), done=set())
        job.done = _read_part_state(job, options.part_size)
        jobs.append(job)
    return jobs


def _fetch(options: SyncOptions, source: Source, jobs: list[_Job], on_progress: Optional[ProgressCallback]) -> None:
    state = _Run(options, source, on_progress)
    for job in jobs:
        os.makedirs(os.path.dirname(job.path), exist_ok=True)
        if os.path.lexists(job.path):
            _remove(job.path)  # short, corrupt or not the manifest's: fetched again
        if not job.done:
            _remove(job.state_path)
        job.fd = os.open(job.part_path, os.O_RDWR | os.O_CREAT | (0 if job.done else os.O_TRUNC), 0o644)
        os.ftruncate(job.fd, job.remote.size)
        job.resumed_bytes = sum(job.parts[i][1] - job.parts[i][0] for i in job.done)
        job.left = len(job.parts) - len(job.done)
    state.progress.files_total = len(jobs)
    state.progress.total_bytes = sum(job.remote.size for job in jobs)
    state.report(add_bytes=sum(job.resumed_bytes for job in jobs))
    with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="models-sync") as pool:
        futures: list[Future[None]] = []
        for job in jobs:
            if job.left == 0:
                futures.append(pool.submit(state.finish, job))
            futures.extend(pool.submit(state.fetch_part, job, i) for i in range(len(job.parts)) if i not in job.done)
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failure = next((f.exception() for f in finished if f.exception() is not None), None)
        if failure is not None:
            state.abort.set()
            for future in futures:
                future.cancel()
            wait(futures)
            for job in jobs:
                if job.fd >= 0:
                    os.close(job.fd)
                    job.fd = -1
            raise failure


def predict(options: SyncOptions, fetch_bytes: int) -> Prediction:
    location = locate(options.directory)
    device_class = location.device_class or "other"
    write_mibs = default_write_mibs(device_class)
    network_mibs = options.network_gbps * 1e9 / 8 / MIB
    rate = min(write_mibs, network_mibs)
    return Prediction(bytes=fetch_bytes, device_class=device_class, write_mibs=write_mibs,
                      network_mibs=round(network_mibs, 1), seconds=round(fetch_bytes / (rate * MIB), 1))


def record(options: SyncOptions) -> None:
    """What `gpuhost check` verifies on this host (rule comfyui.models): the directory and its files."""
    assert options.record is not None
    write_json_atomic(options.record, {
        "schema": RECORD_SCHEMA,
        "source": redact_url(options.source),
        "manifest": os.path.abspath(options.catalog.manifest),
        "directory": os.path.abspath(options.directory),
        "files": [{"folder": m.folder, "name": m.name, "size": m.size, "sha256": m.sha256}
                  for m in options.catalog.files],
    })


__all__ = ["SCHEMA", "SyncOptions", "SyncProgress", "run"]
