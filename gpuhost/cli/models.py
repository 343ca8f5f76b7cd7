"""`gpuhost models sync|verify`: options in, a progress bar on a terminal, a table or JSON out."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Optional

import typer

from gpuhost.cli.common import docs_epilog, emit_json, errors_to_exit, shown
from gpuhost.cli.help import ReferenceCommand
from gpuhost.comfyui.models import sync as models_sync
from gpuhost.comfyui.models import verify as models_verify
from gpuhost.printable import printable
from gpuhost.units import format_duration, human_bytes

if TYPE_CHECKING:
    from gpuhost.comfyui.models.report import ModelsResult
    from gpuhost.comfyui.models.sync import SyncProgress

SYNC_EXIT_CODES = (
    "Exit codes: 0 every file present and verified (--dry-run: planned); 1 a file missing from the source, short "
    "or corrupt after retries, changed at the source mid-copy, or a link planted in DIR (named); 2 bad manifest or "
    "usage, nothing fetched; 3 the source unreachable, access refused, no such bucket, or DIR held by another "
    "sync past --lock-wait; 130/143 stopped by SIGINT/SIGTERM (the parts are kept for the next run)."
)
VERIFY_EXIT_CODES = (
    "Exit codes: 0 every file present and whole; 1 a file missing, short or corrupt (named), or not listed by "
    "ComfyUI (--url); 2 bad manifest or usage; 3 ComfyUI (--url) could not be read."
)

models_app = typer.Typer(
    help="Models outside the image: copy a manifest's model files into ComfyUI's folders and verify them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JSON_HELP = "(boolean) Print the result as JSON (schema gpuhost.models/v1). Example: --json"
MANIFEST_HELP = (
    "(path) The models manifest (the one `gpuhost layers` reads): each entry's path or name, size, ComfyUI "
    "folder and optional sha256. Example: --manifest models.manifest.yaml"
)


def sync(
    source: str = typer.Argument(
        ..., metavar="SOURCE", help="s3://BUCKET/PREFIX, or an https:// base URL; files are SOURCE/FOLDER/NAME "
        "unless the manifest gives an entry's `source`."
    ),
    manifest: str = typer.Option(..., "--manifest", metavar="FILE", help=MANIFEST_HELP),
    to: Optional[str] = typer.Option(
        None, "--to", metavar="DIR",
        help="(path) Where the folders go. Default: models/ at the top of the disk holding Docker's data-root "
        "(/var/lib/gpuhost/models when that is the root disk). Example: --to /mnt/docker/models",
    ),
    concurrency: int = typer.Option(
        16, "--concurrency", metavar="N", help="(integer) Ranged GETs in flight, 1-256. Example: --concurrency 32"
    ),
    part_size: str = typer.Option(
        "16MiB", "--part-size", metavar="SIZE",
        help="(string) The size of each ranged GET (and of what a resume may lose), 1MiB-5GiB. "
        "Example: --part-size 8MiB",
    ),
    region: Optional[str] = typer.Option(
        None, "--region", metavar="REGION", help="(string) The bucket's AWS region. Default: AWS_REGION or the "
        "profile's. Example: --region us-east-1",
    ),
    profile: Optional[str] = typer.Option(
        None, "--profile", metavar="PROFILE",
        help="(string) A named profile from ~/.aws/config. Example: --profile models",
    ),
    endpoint_url: Optional[str] = typer.Option(
        None, "--endpoint-url", metavar="URL",
        help="(string) Send S3 calls to this URL (a VPC endpoint, a test server). Example: --endpoint-url "
        "https://bucket.vpce-0abc.s3.us-east-1.vpce.amazonaws.com",
    ),
    ca_bundle: Optional[str] = typer.Option(
        None, "--ca-bundle", metavar="FILE",
        help="(path) For an https:// source: trust the CA certificates in this PEM file. Example: --ca-bundle ca.pem",
    ),
    timeout: str = typer.Option(
        "60s", "--timeout", metavar="DURATION",
        help="(string) The total deadline of one request (a ranged GET of one part). Example: --timeout 2m",
    ),
    attempts: int = typer.Option(
        5, "--attempts", metavar="N",
        help="(integer) Tries per request on throttling (SlowDown, 503), 5xx and broken connections. "
        "Example: --attempts 8",
    ),
    network_gbps: float = typer.Option(
        models_sync.DEFAULT_NETWORK_GBPS, "--network-gbps", metavar="GBPS",
        help="(number) --dry-run: the instance's network bandwidth for the predicted time. Example: --network-gbps 25",
    ),
    record: Optional[str] = typer.Option(
        None, "--record", metavar="FILE",
        help="(path) After the sync, record the directory and files here for `gpuhost check` (comfyui.models). "
        "Example: --record /etc/gpuhost/models.json",
    ),
    lock_wait: str = typer.Option(
        models_sync.DEFAULT_LOCK_WAIT, "--lock-wait", metavar="DURATION",
        help="(string) How long to wait while another sync (the boot unit, a play) holds DIR, 0 to 24h; past it, "
        "exit 3. Example: --lock-wait 5m",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="(boolean) Say what would be fetched or resumed, how many bytes and how long; fetch nothing. "
        "Example: --dry-run",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Copy a manifest's model files from S3 or https into ComfyUI's model folders, resumably, and verify each.

    Each file is fetched as parallel ranged GETs into NAME.part; NAME.part.json beside it records the source's
    ETag and the parts written, so an interrupted run resumes with the parts it lacks while the source is
    unchanged. Each file is fsynced and checked (size; the safetensors header: an HTML page or a truncated file
    fails; sha256 when the manifest gives one) before it is renamed to NAME. A file already whole is not
    fetched again.

    Nothing below DIR is written through a symbolic link (a planted one fails its file, by name). One sync at a
    time holds DIR (the next waits up to --lock-wait). Ctrl-C or SIGTERM stops it within seconds, keeping the
    parts for the next run (exit 130/143).

    Examples:
    To see what a sync would fetch and how long it would take:
      gpuhost models sync s3://my-models/comfyui --manifest models.manifest.yaml --dry-run

    To sync onto the instance store, recording the result for `gpuhost check`:
      gpuhost models sync s3://my-models/comfyui --manifest models.manifest.yaml --record /etc/gpuhost/models.json

    From an https server (Range requests; redirects followed):
      gpuhost models sync https://models.example.com/comfyui --manifest models.manifest.yaml --to /srv/models

    Output:
    With --json, one object (schema gpuhost.models/v1):
      command, exit_code, message, changed, would_change, dry_run, source, manifest, directory
      totals       files, bytes, failed, bytes_fetched, bytes_resumed, seconds, mb_s
      prediction   --dry-run: bytes, device_class, write_mibs, network_mibs, seconds
      files        per file: folder, name, path, size, action (fetched, resumed, skipped, failed, interrupted;
                   --dry-run: would-fetch, would-resume, present), bytes_fetched, bytes_resumed, seconds, problem
      ignored      manifest globs (entries for `gpuhost layers`, not files to fetch)
    Errors print {"error", "remedy", "exit_code"} instead.
    """
    with errors_to_exit(as_json), models_sync.Stopper() as stopper:
        options = models_sync.SyncOptions.parse(
            source=source, manifest=manifest, to=to, concurrency=concurrency, part_size=part_size, region=region,
            profile=profile, endpoint_url=endpoint_url, ca_bundle=ca_bundle, timeout=timeout, attempts=attempts,
            dry_run=dry_run, network_gbps=network_gbps, record=record, lock_wait=lock_wait,
        )
        if not as_json and not dry_run and sys.stderr.isatty():
            with SyncBar() as bar:
                result = models_sync.run(options, on_progress=bar.update, stopper=stopper)
        else:
            result = models_sync.run(options, stopper=stopper)
    if as_json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    if result.interrupted_by and models_sync.stragglers():
        # a worker blocked in a read no abort could cut: exit now rather than wait out its timeout
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.exit_code)
    raise typer.Exit(result.exit_code)


def verify(
    directory: str = typer.Argument(..., metavar="DIR", help="The directory holding the model folders."),
    manifest: str = typer.Option(..., "--manifest", metavar="FILE", help=MANIFEST_HELP),
    url: Optional[str] = typer.Option(
        None, "--url", metavar="URL",
        help="(string) Also ask this ComfyUI (GET /models/FOLDER) whether it lists each file. "
        "Example: --url http://127.0.0.1:8188",
    ),
    no_hash: bool = typer.Option(
        False, "--no-hash", help="(boolean) Skip the sha256 (size and header only: seconds instead of minutes)."
    ),
    timeout: str = typer.Option(
        "10s", "--timeout", metavar="DURATION", help="(string) --url: the deadline per request. Example: --timeout 30s"
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check that a manifest's model files are in DIR, of their size, whole by their header and their sha256.

    No network, unless --url asks the running ComfyUI which files it sees.

    Examples:
    To verify the synced models:
      gpuhost models verify /mnt/docker/models --manifest models.manifest.yaml

    To verify that ComfyUI sees them too:
      gpuhost models verify /mnt/docker/models --manifest models.manifest.yaml --url http://127.0.0.1:8188

    Output:
    With --json, the object of `gpuhost models sync`, command `verify`; each file's action is ok, missing, short,
    long, corrupt or unlisted (present but not listed by ComfyUI).
    """
    with errors_to_exit(as_json):
        options = models_verify.ModelsOptions.parse(directory=directory, manifest=manifest, hash_files=not no_hash,
                                                    url=url, timeout=timeout)
        result = models_verify.run(options)
    if as_json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    raise typer.Exit(int(result.exit_code))


def register(app: typer.Typer) -> None:
    models_app.command("sync", epilog=docs_epilog("models", SYNC_EXIT_CODES), cls=ReferenceCommand)(sync)
    models_app.command("verify", epilog=docs_epilog("models", VERIFY_EXIT_CODES), cls=ReferenceCommand)(verify)
    app.add_typer(models_app, name="models")


# --- rendering ---------------------------------------------------------------------------------

ACTION_STYLE = {
    "fetched": "green", "resumed": "green", "skipped": "dim", "present": "dim", "ok": "green",
    "would-fetch": "cyan", "would-resume": "cyan",
}


def print_result(result: ModelsResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=shown(f"{result.directory}" + (f" <- {result.source}" if result.source else "")))
    for column in ("file", "size", "action", "fetched", "time", "problem"):
        table.add_column(column, justify="right" if column in ("size", "fetched", "time") else "left")
    for item in result.files:
        table.add_row(
            shown(printable(item.relpath)), human_bytes(item.size),
            shown(item.action, style=ACTION_STYLE.get(item.action, "bold red")),
            human_bytes(item.bytes_fetched) if item.bytes_fetched else "-",
            format_duration(item.seconds) if item.seconds else "-",
            shown(item.problem),
        )
    console.print(table)
    if result.prediction is not None:
        p = result.prediction
        console.print(
            f"predicted: {human_bytes(p.bytes)} in about {format_duration(p.seconds)} (the {p.device_class} disk "
            f"writes {p.write_mibs:.0f} MiB/s, the network {p.network_mibs:.0f} MiB/s)"
        )
    for pattern in result.ignored:
        console.print(shown(f"ignored: {printable(pattern)} (a glob: an entry for `gpuhost layers`)", style="dim"))
    style = "bold red" if result.failed else "bold green"
    console.print(shown(result.message, style=style))


class SyncBar:
    """Bytes, rate, ETA and files on stderr, fed by the sync's progress callback."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[files]}", markup=False), console=Console(stderr=True),
        )
        self._task = self._progress.add_task("models", total=None, files="")

    def __enter__(self) -> SyncBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, progress: SyncProgress) -> Any:
        self._progress.update(
            self._task, total=progress.total_bytes or None, completed=progress.done_bytes,
            description=printable(progress.current or "models"),
            files=f"{progress.files_done}/{progress.files_total} files",
        )
