"""`gpuhost models sync`: copy a manifest's model files from S3 or http(s) into ComfyUI's folders.

Every file is fetched as parallel ranged GETs into NAME.part, beside which NAME.part.json records
the source's size and version and the parts already written (each made durable before it is
recorded). A later run resumes a .part whose source is unchanged, fetching only the parts it lacks.
The whole file is fsynced, checked (size, its format's header, sha256 when the manifest gives one)
and only then renamed to NAME. A file already whole is not fetched again.

Below DIR nothing is written through a symbolic link (gpuhost.comfyui.models.tree); one sync at a
time holds DIR's lock. A file that changes or vanishes at the source mid-copy fails alone, by name.
SIGINT and SIGTERM stop the run within seconds: the workers stop between chunks, requests in flight
are cut, the parts written stay for the next run, and the exit code is 128 + the signal's number.
"""

from __future__ import annotations

import os
import random
import signal
import ssl
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Optional

from gpuhost import userfile
from gpuhost.comfyui.models.catalog import MANIFEST_OPTION, Catalog, ModelFile, load_catalog
from gpuhost.comfyui.models.https import HttpSource, check_http_url
from gpuhost.comfyui.models.local import (
    check_local,
    check_record_path,
    default_models_dir,
    sha256_fd,
    write_json_atomic,
    write_stamp_fd,
)
from gpuhost.comfyui.models.report import SCHEMA, FileResult, ModelsResult, Prediction, check_directory
from gpuhost.comfyui.models.safetensors import check_model_file
from gpuhost.comfyui.models.source import (
    ChangedObject,
    Interrupted,
    MissingObject,
    RemoteObject,
    Source,
    TransientError,
)
from gpuhost.comfyui.models.tree import (
    DirectoryLock,
    ModelsTree,
    UnsafePath,
    fsync_dir,
    lstat_at,
    open_part,
    parse_lock_wait,
    remove_at,
    write_json_at,
)
from gpuhost.facts.storage import locate
from gpuhost.model import SourceError, UsageError
from gpuhost.options import Command, Option, json_flag
from gpuhost.redact import redact_url
from gpuhost.units import MIB, parse_duration, parse_size
from gpuhost.unpack import default_write_mibs

PART_STATE_SUFFIX = ".part.json"
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 1 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
DEFAULT_NETWORK_GBPS = 10.0
MAX_NETWORK_GBPS = 3200.0
DEFAULT_PART_SIZE_TEXT = "16MiB"
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 256
DEFAULT_ATTEMPTS = 5
MAX_ATTEMPTS = 20
DEFAULT_TIMEOUT = "60s"
RECORD_SCHEMA = "gpuhost.models.record/v1"
DEFAULT_RECORD = "/etc/gpuhost/models.json"
# how long a sync waits for another one on the same DIR (the boot unit and a play) to finish
DEFAULT_LOCK_WAIT = "30m"
DEFAULT_LOCK_WAIT_S = 1800.0
# after a signal: how long the workers get to notice before the run reports and returns
STOP_GRACE_S = 5.0
POLL_S = 0.2


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
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S

    @classmethod
    def parse(
        cls,
        *,
        source: str,
        manifest: str,
        to: Optional[str] = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        part_size: str = DEFAULT_PART_SIZE_TEXT,
        region: Optional[str] = None,
        profile: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        ca_bundle: Optional[str] = None,
        timeout: str = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        dry_run: bool = False,
        network_gbps: float = DEFAULT_NETWORK_GBPS,
        record: Optional[str] = None,
        lock_wait: str = DEFAULT_LOCK_WAIT,
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
        if ca_bundle is not None:
            check_ca_bundle(ca_bundle)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency must be 1 to {MAX_CONCURRENCY}, got {concurrency!r}",
                             "Example: --concurrency 32")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS:
            raise UsageError(f"--attempts must be 1 to {MAX_ATTEMPTS}, got {attempts!r}", "Example: --attempts 5")
        part = parse_size(part_size, "--part-size")
        if not MIN_PART_SIZE <= part <= MAX_PART_SIZE:
            raise UsageError(f"--part-size must be 1MiB to 5GiB, got {part_size!r}", "Example: --part-size 16MiB")
        if not isinstance(network_gbps, (int, float)) or isinstance(network_gbps, bool) or \
                not (0 < network_gbps <= MAX_NETWORK_GBPS):  # NaN fails this too
            raise UsageError(f"--network-gbps must be above 0 and at most {MAX_NETWORK_GBPS:g}, got {network_gbps!r}",
                             "Example: --network-gbps 25")
        timeout_s = parse_duration(timeout, "--timeout")
        lock_wait_s = parse_lock_wait(lock_wait)
        catalog = load_catalog(manifest)
        directory = check_directory(to) if to is not None else default_models_dir()
        if record is not None:
            check_directory(record, "--record")
            check_record_path(record)
        return cls(
            source=source, catalog=catalog, directory=directory, concurrency=concurrency, part_size=part,
            region=region, profile=profile, endpoint_url=endpoint_url, ca_bundle=ca_bundle, timeout_s=timeout_s,
            attempts=attempts, dry_run=dry_run, network_gbps=float(network_gbps), record=record,
            lock_wait_s=lock_wait_s,
        )

    def open_source(self) -> Source:
        if self.source.startswith("s3://"):
            from gpuhost.comfyui.models.s3 import S3Source

            return S3Source(self.source, region=self.region, profile=self.profile, endpoint_url=self.endpoint_url,
                            connections=self.concurrency + 4, timeout_s=self.timeout_s, attempts=self.attempts)
        return HttpSource(self.source, timeout_s=self.timeout_s, ca_bundle=self.ca_bundle)


MODELS_SYNC = Command(
    cli="models sync",
    agent="models-sync",
    summary="copy model files from S3 or https (see gpuhost models sync)",
    options=(
        Option("SOURCE", "s3://BUCKET/PREFIX, or an https:// base URL; files are SOURCE/FOLDER/NAME unless the "
               "manifest gives an entry's `source`.", kind="name", required=True),
        MANIFEST_OPTION,
        Option("--to", "Where the folders go. Default: models/ at the top of the disk holding Docker's data-root "
               "(/var/lib/gpuhost/models when that is the root disk).", kind="place", metavar="DIR",
               example="--to /mnt/docker/models"),
        Option("--concurrency", "Ranged GETs in flight, 1-256.", kind="int", default=DEFAULT_CONCURRENCY, metavar="N",
               minimum=1, maximum=MAX_CONCURRENCY, example="--concurrency 32"),
        Option("--part-size", "The size of each ranged GET (and of what a resume may lose), 1MiB-5GiB.",
               default=DEFAULT_PART_SIZE_TEXT, metavar="SIZE", example="--part-size 8MiB"),
        Option("--region", "The bucket's AWS region. Default: AWS_REGION or the profile's.", metavar="REGION",
               example="--region us-east-1"),
        Option("--profile", "A named profile from ~/.aws/config.", metavar="PROFILE", example="--profile models"),
        Option("--endpoint-url", "Send S3 calls to this URL (a VPC endpoint, a test server).", metavar="URL",
               example="--endpoint-url https://bucket.vpce-0abc.s3.us-east-1.vpce.amazonaws.com"),
        Option("--ca-bundle", "For an https:// source: trust the CA certificates in this PEM file.", kind="path",
               metavar="FILE", example="--ca-bundle ca.pem"),
        Option("--timeout", "The total deadline of one request (a ranged GET of one part).", default=DEFAULT_TIMEOUT,
               metavar="DURATION", example="--timeout 2m"),
        Option("--attempts", "Tries per request on throttling (SlowDown, 503), 5xx and broken connections.",
               kind="int", default=DEFAULT_ATTEMPTS, metavar="N", minimum=1, maximum=MAX_ATTEMPTS,
               example="--attempts 8"),
        Option("--network-gbps", "--dry-run: the instance's network bandwidth for the predicted time.",
               kind="number", default=DEFAULT_NETWORK_GBPS, metavar="GBPS", minimum=0, maximum=MAX_NETWORK_GBPS,
               example="--network-gbps 25"),
        Option("--record", "After the sync, record the directory and files here for `gpuhost check` "
               "(comfyui.models).", kind="place", metavar="FILE", example="--record /etc/gpuhost/models.json"),
        Option("--lock-wait", "How long to wait while another sync (the boot unit, a play) holds DIR, 0 to 24h; past "
               "it, exit 3.", default=DEFAULT_LOCK_WAIT, metavar="DURATION", example="--lock-wait 5m"),
        Option("--dry-run", "Say what would be fetched or resumed, how many bytes and how long; fetch nothing.",
               kind="flag", default=False, example="--dry-run"),
        json_flag("the result (schema gpuhost.models/v1)"),
    ),
    parsers=(SyncOptions.parse,),
)


def check_ca_bundle(path: str) -> None:
    """--ca-bundle: a regular file of PEM certificates ssl can load (checked before any request)."""
    userfile.check_regular(path, "--ca-bundle", userfile.CA_BUNDLE_MAX)
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise UsageError(f"--ca-bundle {path} holds no CA certificate ssl can load ({exc})",
                         "Give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----).") from None


@dataclass
class SyncProgress:
    total_bytes: int = 0
    done_bytes: int = 0
    files_total: int = 0
    files_done: int = 0
    current: str = ""


ProgressCallback = Callable[[SyncProgress], None]


class Stopper:
    """SIGINT and SIGTERM, while a sync runs: the handler only records the signal; the main thread
    (which polls) and the workers (between chunks) act on it. Installed from the main thread only."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._saved[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.signum = self.signum or signum
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._saved.items():
            signal.signal(number, handler)

    def stopping(self) -> bool:
        return self.event.is_set()


@dataclass
class _Job:
    model: ModelFile
    path: str
    folder: str  # DIR-relative folder, `/`-separated
    base: str  # the file's name in it
    folder_fd: int
    remote: RemoteObject
    parts: list[tuple[int, int]]
    done: set[int]
    fd: int = -1
    # parts being fetched now: the descriptor is closed only when none is (a closed number could be
    # reused by another file while a worker still writes to it)
    inflight: int = 0
    resumed_bytes: int = 0
    fetched_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    left: int = 0
    result: Optional[FileResult] = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def part_name(self) -> str:
        return self.base + ".part"

    @property
    def state_name(self) -> str:
        return self.base + PART_STATE_SUFFIX

    @property
    def part_path(self) -> str:
        return self.path + ".part"

    def held_bytes(self) -> int:
        return sum(self.parts[i][1] - self.parts[i][0] for i in self.done)


def _parts(size: int, part_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + part_size, size)) for start in range(0, size, part_size)] or [(0, 0)]


def _read_part_state(job: _Job, part_size: int) -> set[int]:
    """The parts an earlier run wrote, when its source object is the one there now (never read
    through a link; a state file that is not a regular file of sane size counts as none)."""
    try:
        state = userfile.load_json(job.state_name, "", userfile.RECORD_MAX, dir_fd=job.folder_fd,
                                   follow_symlinks=False)
    except userfile.UserFileError:
        return set()
    info = lstat_at(job.folder_fd, job.part_name)
    if info is None or not stat.S_ISREG(info.st_mode):
        return set()
    part_bytes = info.st_size
    if not isinstance(state, dict) or state.get("version") != job.remote.version or \
            state.get("size") != job.remote.size or state.get("part_size") != part_size or \
            part_bytes > job.remote.size:
        return set()
    done = state.get("done")
    if not isinstance(done, list):
        return set()
    return {i for i in done if isinstance(i, int) and 0 <= i < len(job.parts) and job.parts[i][1] <= part_bytes}


def _save_part_state(job: _Job, part_size: int) -> None:
    write_json_at(job.folder_fd, job.state_name, {
        "source": job.remote.key, "version": job.remote.version, "size": job.remote.size,
        "part_size": part_size, "done": sorted(job.done),
    })


class _Run:
    def __init__(self, options: SyncOptions, source: Source, on_progress: Optional[ProgressCallback],
                 stopper: Stopper) -> None:
        self.options = options
        self.source = source
        self.on_progress = on_progress
        self.stopper = stopper
        self.progress = SyncProgress()
        self.lock = threading.Lock()

    def report(self, name: str = "", add_bytes: int = 0, add_file: bool = False) -> None:
        with self.lock:
            self.progress.done_bytes += add_bytes
            self.progress.files_done += int(add_file)
            if name:
                self.progress.current = name
            if self.on_progress is not None:
                self.on_progress(self.progress)

    def _enter(self, job: _Job) -> bool:
        """Count one more part in flight (opening NAME.part for the first); False when the job is
        over (failed) or the run is stopping."""
        with job.lock:
            if job.result is not None or self.stopper.stopping():
                return False
            if job.fd < 0:
                try:
                    job.fd = open_part(job.folder_fd, job.part_name, job.part_path, resume=bool(job.done))
                    if not job.done:
                        remove_at(job.folder_fd, job.state_name)
                    os.ftruncate(job.fd, job.remote.size)
                except (UnsafePath, OSError) as exc:
                    if job.fd >= 0:
                        os.close(job.fd)
                        job.fd = -1
                    self._fail_locked(job, _os_problem(exc, job.part_path))
                    return False
            job.inflight += 1
            return True

    def _leave(self, job: _Job, index: int, written: bool) -> bool:
        """One part out of flight; True when it was the last one the file lacked."""
        with job.lock:
            job.inflight -= 1
            last = False
            if written and job.result is None:
                try:
                    os.fdatasync(job.fd)  # the part is on disk before the state says so
                    job.done.add(index)
                    _save_part_state(job, self.options.part_size)
                    job.left -= 1
                    last = job.left == 0
                except OSError as exc:
                    self._fail_locked(job, _os_problem(exc, job.part_path))
            if job.result is not None:
                self._close_locked(job)
        return last

    def fetch_part(self, job: _Job, index: int) -> None:
        if not self._enter(job):
            return
        written = False
        try:
            written = self._download(job, index)
        except Exception as exc:  # a write that failed (ENOSPC), an answer no branch expected: this file only
            self.fail(job, _os_problem(exc, job.part_path))
        finally:
            last = self._leave(job, index, written)
        if last:
            self.finish(job)

    def _download(self, job: _Job, index: int) -> bool:
        """Fetch one part into NAME.part; True when all of it is written."""
        start, end = job.parts[index]
        offset = start
        for attempt in range(1, self.options.attempts + 1):
            if self.stopper.stopping() or job.result is not None:
                return False
            try:
                for chunk in self.source.read_range(job.remote, offset, end):
                    if self.stopper.stopping() or job.result is not None:
                        return False
                    os.pwrite(job.fd, chunk, offset)
                    offset += len(chunk)
                    with job.lock:
                        job.fetched_bytes += len(chunk)
                    self.report(job.model.relpath, add_bytes=len(chunk))
                return True
            except OSError as exc:
                if self.stopper.stopping():
                    return False
                self.fail(job, _os_problem(exc, job.part_path))
                return False
            except TransientError as exc:
                if self.stopper.stopping():
                    return False
                if attempt == self.options.attempts:
                    self.fail(job, f"gave up after {attempt} attempts: {exc}")
                    return False
                self.stopper.event.wait(min(10.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random()))
            except MissingObject as exc:
                if not self.stopper.stopping():
                    self.fail(job, f"{exc}: removed from the source while it was being copied", keep_part=False)
                return False
            except ChangedObject as exc:
                if not self.stopper.stopping():
                    self.fail(job, f"{exc}; run the sync again to fetch the new version", keep_part=False)
                return False
            except (SourceError, UsageError) as exc:
                if not self.stopper.stopping():
                    self.fail(job, str(exc), unreadable=isinstance(exc, SourceError))
                return False
        return False

    def fail(self, job: _Job, problem: str, keep_part: bool = True, unreadable: bool = False) -> None:
        with job.lock:
            self._fail_locked(job, problem, keep_part, unreadable)

    def _fail_locked(self, job: _Job, problem: str, keep_part: bool = True, unreadable: bool = False) -> None:
        if job.result is not None:
            return
        job.result = FileResult.of(job.model, job.path, "failed", problem=problem, fetched=job.fetched_bytes,
                                   resumed=job.resumed_bytes, seconds=time.monotonic() - job.started,
                                   unreadable=unreadable)
        if not keep_part:
            remove_at(job.folder_fd, job.part_name, job.state_name)
        if job.inflight == 0:
            self._close_locked(job)
        self.report(add_file=True)

    @staticmethod
    def _close_locked(job: _Job) -> None:
        if job.fd >= 0 and job.inflight == 0:
            os.close(job.fd)
            job.fd = -1

    def finish(self, job: _Job) -> None:
        """All parts in: check the file it wrote (through its descriptor) and rename it into place.
        Counted in flight meanwhile, so that nothing closes the descriptor under it."""
        with job.lock:
            job.inflight += 1
        try:
            self._finish(job)
        finally:
            with job.lock:
                job.inflight -= 1
                if job.result is not None:
                    self._close_locked(job)

    def _finish(self, job: _Job) -> None:
        try:
            problem, digest = self._verify(job)
        except Interrupted:
            return  # every part is recorded: the next run only checks and renames
        except OSError as exc:
            self.fail(job, _os_problem(exc, job.part_path))
            return
        with job.lock:
            if problem:
                remove_at(job.folder_fd, job.part_name, job.state_name)
                self._fail_locked(job, f"the source's copy is bad: {problem}")
                return
            try:
                self._install(job, digest)
            except (OSError, UnsafePath) as exc:
                self._fail_locked(job, _os_problem(exc, job.path))
                return
            job.result = FileResult.of(job.model, job.path, "resumed" if job.resumed_bytes else "fetched",
                                       fetched=job.fetched_bytes, resumed=job.resumed_bytes,
                                       seconds=time.monotonic() - job.started)
        self.report(add_file=True)

    def _verify(self, job: _Job) -> tuple[str, str]:
        os.fsync(job.fd)
        size = os.fstat(job.fd).st_size
        problem = "" if size == job.model.size else f"{size} bytes of {job.model.size}"
        problem = problem or check_model_file(job.part_path, name=job.path, fd=job.fd)
        digest = ""
        if not problem and job.model.sha256:
            digest = sha256_fd(job.fd, self.stopper.stopping)
            if digest != job.model.sha256:
                problem = f"sha256 {digest[:16]}... is not the manifest's {job.model.sha256[:16]}..."
        return problem, digest

    def _install(self, job: _Job, digest: str) -> None:
        """NAME.part -> NAME within its folder; then NAME must be the file written (a swap of the
        .part by someone else is caught, and what was renamed is taken out again)."""
        os.replace(job.part_name, job.base, src_dir_fd=job.folder_fd, dst_dir_fd=job.folder_fd)
        written, installed = os.fstat(job.fd), lstat_at(job.folder_fd, job.base)
        if installed is None or (installed.st_dev, installed.st_ino) != (written.st_dev, written.st_ino):
            remove_at(job.folder_fd, job.base)
            raise UnsafePath(job.path, "was replaced by another file while it was being installed: removed")
        remove_at(job.folder_fd, job.state_name)
        fsync_dir(job.folder_fd)
        if digest:
            write_stamp_fd(job.fd, digest)


def _os_problem(exc: BaseException, path: str) -> str:
    if isinstance(exc, UnsafePath):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot write {path}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def run(options: SyncOptions, on_progress: Optional[ProgressCallback] = None,
        stopper: Optional[Stopper] = None) -> ModelsResult:
    """The sync as a result (schema gpuhost.models/v1). SIGINT/SIGTERM during it (main thread)
    end it early with result.interrupted_by set; UsageError/SourceError for what stops the whole run.
    A front end that installed a Stopper before parsing its options passes it in."""
    if stopper is None:
        with Stopper() as own:
            return run(options, on_progress, own)
    started = time.monotonic()
    result = ModelsResult(command="sync", source=options.source, directory=options.directory,
                          manifest=options.catalog.manifest, dry_run=options.dry_run,
                          ignored=list(options.catalog.ignored))
    tree = ModelsTree(options.directory, create=not options.dry_run)
    lock = DirectoryLock(tree)
    try:
        todo = _scan(options, tree, result, stopper)
        if todo and not options.dry_run:
            lock.acquire(options.lock_wait_s, stopper.stopping)
            result.files.clear()  # what another sync did while this one waited counts
            todo = _scan(options, tree, result, stopper)
        if todo:
            _sync(options, tree, todo, result, on_progress, stopper)
    except Interrupted:
        pass
    finally:
        lock.release()
        tree.close()
    if stopper.signum:
        result.interrupted_by = stopper.signum
        listed = {f.relpath for f in result.files}
        result.files.extend(FileResult.of(m, m.local_path(options.directory), "interrupted",
                                          problem="stopped before it was fetched")
                            for m in options.catalog.files if m.relpath not in listed)
    if options.dry_run and not stopper.signum:
        planned = sum(f.bytes_fetched for f in result.files if f.action.startswith("would-"))
        result.prediction = predict(options, planned)
    order = {m.relpath: i for i, m in enumerate(options.catalog.files)}
    result.files.sort(key=lambda f: order.get(f.relpath, 0))
    result.seconds = time.monotonic() - started
    if options.record and not options.dry_run and not stopper.signum:
        record(options)
    return result


def _slot(model: ModelFile) -> tuple[str, str]:
    """The DIR-relative folder of a model file and its name there."""
    folder, _, base = f"{model.folder}/{model.name}".rpartition("/")
    return folder, base


def _scan(options: SyncOptions, tree: ModelsTree, result: ModelsResult,
          stopper: Stopper) -> list[tuple[ModelFile, str, int]]:
    """The files to fetch (model, path, folder descriptor or -1); the rest go into result: present,
    or failed when a link (or another non-file) stands where sync would write."""
    todo = []
    for model in options.catalog.files:
        if stopper.stopping():
            raise Interrupted()
        path = model.local_path(options.directory)
        folder, base = _slot(model)
        try:
            folder_fd = tree.folder(folder, create=not options.dry_run)
            if folder_fd is not None:
                tree.check_files(folder_fd, folder, (base, base + ".part", base + PART_STATE_SUFFIX))
        except UnsafePath as exc:
            result.files.append(FileResult.of(model, path, "failed", problem=str(exc)))
            continue
        state = check_local(model, path, trust_stamp=True, should_stop=stopper.stopping)
        if state.ok:
            result.files.append(FileResult.of(model, path, "present" if options.dry_run else "skipped"))
        else:
            todo.append((model, path, -1 if folder_fd is None else folder_fd))
    return todo


def _sync(options: SyncOptions, tree: ModelsTree, todo: list[tuple[ModelFile, str, int]], result: ModelsResult,
          on_progress: Optional[ProgressCallback], stopper: Stopper) -> None:
    source = options.open_source()
    try:
        jobs = _plan_jobs(options, source, todo, result, stopper)
        if options.dry_run:
            for job in jobs:
                held = job.held_bytes()
                result.files.append(FileResult.of(job.model, job.path, "would-resume" if held else "would-fetch",
                                                  fetched=job.remote.size - held, resumed=held))
        elif jobs:
            _fetch(options, source, jobs, on_progress, stopper)
            result.files.extend(job.result for job in jobs if job.result is not None)
            result.files.extend(FileResult.of(
                job.model, job.path, "interrupted", fetched=job.fetched_bytes, resumed=job.resumed_bytes,
                seconds=time.monotonic() - job.started,
                problem=f"stopped with {job.held_bytes()} of {job.remote.size} bytes kept in {job.part_path}")
                for job in jobs if job.result is None)
    finally:
        source.close()


def _wait_all(futures: list[Future[Any]], stopper: Stopper, source: Source) -> bool:
    """Wait for every future, polling for a signal; False when one came (the queued work is
    cancelled, the requests in flight are cut, and the workers get STOP_GRACE_S to notice)."""
    pending = set(futures)
    while pending and not stopper.stopping():
        _, pending = wait(pending, timeout=POLL_S)
    if not stopper.stopping():
        return True
    for future in futures:
        future.cancel()
    source.abort()
    wait(futures, timeout=STOP_GRACE_S)
    return False


def _plan_jobs(options: SyncOptions, source: Source, todo: list[tuple[ModelFile, str, int]],
               result: ModelsResult, stopper: Stopper) -> list[_Job]:
    def stat_one(item: tuple[ModelFile, str, int]) -> Any:
        model = item[0]
        for attempt in range(1, options.attempts + 1):
            try:
                return source.stat(model.source_key)
            except MissingObject as exc:
                return exc
            except TransientError as exc:
                if attempt == options.attempts or stopper.stopping():
                    return exc
                stopper.event.wait(min(10.0, 0.25 * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")

    pool = ThreadPoolExecutor(max_workers=min(options.concurrency, 16), thread_name_prefix="models-sync-stat")
    try:
        futures = [pool.submit(stat_one, item) for item in todo]
        if not _wait_all(futures, stopper, source):
            raise Interrupted()
        answers = [future.result() for future in futures]  # a SourceError or UsageError stops the run
    finally:
        pool.shutdown(wait=not stopper.stopping(), cancel_futures=True)
    missing = [model.source_key for (model, _, _), answer in zip(todo, answers) if isinstance(answer, MissingObject)]
    if missing and len(missing) == len(todo):
        reason = source.explain_missing(missing)
        if reason is not None:
            raise reason
    jobs = []
    for (model, path, folder_fd), answer in zip(todo, answers):
        if isinstance(answer, Exception):
            result.files.append(FileResult.of(model, path, "failed", problem=str(answer)))
            continue
        if answer.size != model.size:
            result.files.append(FileResult.of(
                model, path, "failed",
                problem=f"the source has {answer.size} bytes, the manifest says {model.size}: fix one of them"))
            continue
        folder, base = _slot(model)
        job = _Job(model=model, path=path, folder=folder, base=base, folder_fd=folder_fd, remote=answer,
                   parts=_parts(answer.size, options.part_size), done=set())
        if folder_fd >= 0:
            job.done = _read_part_state(job, options.part_size)
        jobs.append(job)
    return jobs


def _fetch(options: SyncOptions, source: Source, jobs: list[_Job], on_progress: Optional[ProgressCallback],
           stopper: Stopper) -> None:
    state = _Run(options, source, on_progress, stopper)
    for job in jobs:
        info = lstat_at(job.folder_fd, job.base)
        if info is not None:
            remove_at(job.folder_fd, job.base)  # short, corrupt or not the manifest's: fetched again
        job.resumed_bytes = job.held_bytes()
        job.left = len(job.parts) - len(job.done)
    state.progress.files_total = len(jobs)
    state.progress.total_bytes = sum(job.remote.size for job in jobs)
    state.report(add_bytes=sum(job.resumed_bytes for job in jobs))
    pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="models-sync")
    futures: list[Future[None]] = []
    try:
        for job in jobs:
            if job.left == 0:
                futures.append(pool.submit(_finish_resumed, state, job))
            futures.extend(pool.submit(state.fetch_part, job, i) for i in range(len(job.parts)) if i not in job.done)
        _wait_all(futures, stopper, source)
    finally:
        pool.shutdown(wait=not stopper.stopping(), cancel_futures=True)
        for job in jobs:
            with job.lock:
                state._close_locked(job)  # only where no worker still holds it


def _finish_resumed(state: _Run, job: _Job) -> None:
    """Every part was in NAME.part already: open it and check it like one just fetched."""
    if state._enter(job):
        state._leave(job, -1, False)
        state.finish(job)


def stragglers() -> int:
    """Sync workers still alive (blocked in a read no abort could cut): a front end that stops on a
    signal exits without waiting for them."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("models-sync") and t.is_alive())


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


__all__ = ["SCHEMA", "SyncOptions", "SyncProgress", "run", "stragglers"]
