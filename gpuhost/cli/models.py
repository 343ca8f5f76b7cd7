"""`gpuhost models sync|verify`: options in, a progress bar on a terminal, a table or JSON out."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import typer

from gpuhost.cli.common import docs_epilog, emit_json, errors_to_exit, shown
from gpuhost.cli.help import ReferenceCommand
from gpuhost.cli.table import typer_command
from gpuhost.comfyui.models import sync as models_sync
from gpuhost.comfyui.models import verify as models_verify
from gpuhost.options import Values
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


def sync(values: Values) -> None:
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
    as_json = values.json
    with errors_to_exit(as_json), models_sync.Stopper() as stopper:
        options = models_sync.SyncOptions.parse(**values.for_call(models_sync.SyncOptions.parse))
        if not as_json and not values.dry_run and sys.stderr.isatty():
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


def verify(values: Values) -> None:
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
    as_json = values.json
    with errors_to_exit(as_json):
        parse = models_verify.ModelsOptions.parse
        options = parse(**values.for_call(parse, hash_files=not values.no_hash))
        result = models_verify.run(options)
    if as_json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    raise typer.Exit(int(result.exit_code))


def register(app: typer.Typer) -> None:
    models_app.command("sync", epilog=docs_epilog("models", SYNC_EXIT_CODES), cls=ReferenceCommand)(
        typer_command(models_sync.MODELS_SYNC, sync, reference=True)
    )
    models_app.command("verify", epilog=docs_epilog("models", VERIFY_EXIT_CODES), cls=ReferenceCommand)(
        typer_command(models_verify.MODELS_VERIFY, verify, reference=True)
    )
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
