"""`gpuhost wait-ready` and `gpuhost layers`, and how `check --workflow` is shown: parse, call, render."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from gpuhost.cli.common import docs_epilog, emit_json, errors_to_exit, shown
from gpuhost.cli.help import ReferenceCommand
from gpuhost.cli.table import typer_command
from gpuhost.comfyui.layers import LAYERS, LayersOptions, image_layers
from gpuhost.comfyui.readiness import Phase
from gpuhost.comfyui.wait import WAIT_READY, WaitOptions, many_to_dict
from gpuhost.comfyui.wait import wait_ready as run_wait
from gpuhost.comfyui.wait import wait_ready_many as run_wait_many
from gpuhost.engine import EngineClient
from gpuhost.model import Severity
from gpuhost.options import Values
from gpuhost.printable import printable
from gpuhost.redact import redact_urls
from gpuhost.units import format_duration, human_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from gpuhost.comfyui.layers import LayersReport
    from gpuhost.comfyui.wait import Progress, WaitResult

WAIT_READY_EXIT_CODES = (
    "Exit codes: 0 ComfyUI is ready (the GUI line in this container's log and HTTP 200 from its /system_stats); "
    "1 it failed, stalled or was not ready before --timeout; 2 bad usage or input (no such container, bad "
    "duration); 3 Docker could not be read (not running, permission denied)."
)


def wait_ready(values: Values) -> None:
    """Wait until ComfyUI in CONTAINER really serves, or say why it will not.

    Reads the container's log so far, then follows it through the Docker Engine API, with its state
    (running, exit code, restart count), and probes GET /system_stats through the container's own
    published port. Idleness counts from the last line's own timestamp: a server that printed its
    GUI line long ago is ready at once, whatever --stall-timeout says. Ready
    needs both the line `To see the GUI go to: http://...` in THIS container's log and HTTP 200 after
    it: a 200 before it comes from another process holding the port.

    Failed: a missing Python module before `ComfyUI version:` (the process is about to exit), an
    unhandled exception from main.py, `OSError: [Errno 98]` (port in use), the container exiting or
    restarting. Stalled: no new log line for --stall-timeout before the GUI line. Tracebacks and
    IMPORT FAILED lines of comfy_extras or custom nodes are warnings that name the node: ComfyUI
    still serves without them.

    A live status line shows on a terminal while waiting. On failure the reason, the failing line,
    what to do and the last 30 log lines are printed.

    Examples:
    To wait for the container the comfyui role started:
      gpuhost wait-ready comfyui

    To allow a slow first start (image init, pip installs) and print JSON:
      gpuhost wait-ready comfyui --timeout 30m --stall-timeout 10m --json

    To wait for every instance of a four-GPU host at once (exit 0 when all are ready):
      gpuhost wait-ready comfyui-0 comfyui-1 comfyui-2 comfyui-3

    Output:
    With --json, one object (schema gpuhost.wait-ready/v1):
      verdict         ready | failed | stalled
      reason          ready, missing-module, port-in-use, crashed, exited, stopped, restarted,
                      paused, dead, listen-loopback, not-published, stalled, timeout
      message, remedy, failing_line, last_line, url, gui_url, last_probe, comfyui_version
      was_serving     true when the run had printed the GUI line before it stopped
      warnings        nodes that failed to import: kind (custom-node | comfy-extras), node, path, reason
      tail            the last 30 log lines
      elapsed_s, exit_code
    With several containers, one object (schema gpuhost.wait-ready.instances/v1): ready, total,
    containers (one object as above each), exit_code (0 when all are ready).
    """
    as_json, containers, docker_host = values.json, values.containers, values.docker_host
    with errors_to_exit(as_json):
        options = WaitOptions.parse(**values.for_call(WaitOptions.parse))
        client = EngineClient(docker_host, timeout=10.0)
        if len(containers) > 1:
            results = run_wait_many(lambda: EngineClient(docker_host, timeout=10.0), containers, options)
        elif as_json:
            results = [run_wait(client, containers[0], options)]
        else:
            with WaitProgress(containers[0]) as progress:
                results = [run_wait(client, containers[0], options, on_progress=progress.update)]
    if as_json:
        emit_json(results[0].to_dict() if len(results) == 1 else many_to_dict(results))
    else:
        for result in results:
            print_wait(result)
    raise typer.Exit(max(result.exit_code for result in results))


LAYERS_EXIT_CODES = (
    "Exit codes: 0 no model layer is empty or too small; 1 at least one is (a failed download); "
    "2 bad usage or input (no such image, unreadable manifest); 3 Docker could not be read."
)


def layers(values: Values) -> None:
    """Show an image's layers and flag the model downloads that produced nothing or too little.

    A layer whose command downloads or copies a model (wget, curl, aria2c, hf download,
    huggingface-cli download, hf_hub_download, COPY/ADD into a models path or of a model file) is
    flagged when it is 0 B, smaller than --min-model-bytes, or smaller than the manifest expects:
    `RUN curl ... || true` that fetched nothing, or an error page saved under a model's name, is
    cached by the build like a success. Sizes and commands come from the Docker Engine API
    (/images/{name}/history). The total feeds the unpack-time prediction for the device under
    Docker's data-root.

    Examples:
    To check an image built here:
      gpuhost layers comfyui-sd15:2025-10

    To hold it to the sizes in the manifest beside its Dockerfile:
      gpuhost layers comfyui-sd15:2025-10 --manifest docker/comfyui-sd15/

    Output:
    With --json, one object (schema gpuhost.comfyui.layers/v1):
      layers          index (1 = base), id, instruction, command, size, model_step, model_why,
                      expected_bytes, manifest_keys, severity, problem, compression, compressed_bytes
      flagged         indexes of the failing layers
      total_bytes, model_bytes, min_model_bytes, manifest, unmatched_manifest_entries
      unpack          image_store (classic or containerd), store_root, data_root, device, device_class,
                      write_mib_s, write_source, predicted_s, predicted
      pull            registry_layers (digest, compression, compressed_bytes), registry_error,
                      decompress_source, decompressor (store, process, gzip: go, unpigz or igzip,
                      path, looks_for, basis, why), entries (total, per_layer, source, seconds, error),
                      predicted (download_s, decompress_s, files_s, write_s, total_s, entries,
                      per_entry_us)
      findings, exit_code
    """
    as_json = values.json
    with errors_to_exit(as_json):
        options = LayersOptions.parse(**values.for_call(LayersOptions.parse))
        report = image_layers(
            EngineClient(values.docker_host, timeout=30.0),
            values.image,
            options.min_model_bytes,
            options.manifest,
            options.write_mib_s,
            download_mib_s=options.download_mib_s,
            probe_record=options.probe_record,
            count_entries=options.count_entries,
        )
    if as_json:
        emit_json(report.to_dict())
    else:
        print_layers(report)
    raise typer.Exit(int(report.exit_code))


def register(app: typer.Typer) -> None:
    app.command("wait-ready", epilog=docs_epilog("wait-ready", WAIT_READY_EXIT_CODES), cls=ReferenceCommand)(
        typer_command(WAIT_READY, wait_ready, reference=True)
    )
    app.command("layers", epilog=docs_epilog("layers", LAYERS_EXIT_CODES), cls=ReferenceCommand)(
        typer_command(LAYERS, layers, reference=True)
    )


# --- rendering ---------------------------------------------------------------------------------

PHASE_STYLE = {Phase.READY: "bold green", Phase.STARTING: "yellow", Phase.FAILED: "bold red", Phase.STALLED: "bold red"}


class WaitProgress:
    """A live status line on stderr while waiting (nothing when stderr is not a terminal)."""

    def __init__(self, container: str) -> None:
        from rich.console import Console

        self.container = container
        self.console = Console(stderr=True)
        self._status: Any = None

    def __enter__(self) -> WaitProgress:
        if self.console.is_terminal:
            self._status = self.console.status(shown(f"waiting for {self.container}"))
            self._status.__enter__()
        return self

    def update(self, progress: Progress) -> None:
        if self._status is None:
            return
        last = printable(" ".join(progress.last_line.split()))[:80] or "(no output yet)"
        self._status.update(
            shown(
                f"{self.container}: {progress.phase.value} {progress.elapsed_s:5.1f} s, {progress.lines_seen} lines, "
                f"probe {progress.last_probe or '-'} | {last}"
            )
        )

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)


def print_wait(result: WaitResult, console: Console | None = None) -> None:
    from rich.console import Console

    console = console or Console(soft_wrap=True)
    verdict = result.verdict
    head = shown(f"{result.container}: ")
    head.append(verdict.phase.value.upper(), style=PHASE_STYLE[verdict.phase])
    if verdict.phase is not Phase.READY:
        head.append(f" ({verdict.reason})")
    head.append(f" after {result.elapsed_s:.1f} s")
    console.print(head)
    console.print(shown(f"  {verdict.message}"))
    if verdict.failing_line:
        console.print(shown(f"  failing line: {printable(verdict.failing_line)}", style="bold"))
    if verdict.remedy:
        console.print(shown(f"  what to do: {verdict.remedy}"))
    for warning in verdict.warnings:
        kind = "custom node" if warning.kind == "custom-node" else "comfy_extras node"
        reason = f": {warning.reason}" if warning.reason else ""
        console.print(shown(printable(f"  warning: {kind} {warning.node} failed to import{reason}"), style="yellow"))
    if verdict.notes:
        console.print(shown(printable("  harmless: " + "; ".join(verdict.notes)), style="dim"))
    if verdict.phase is not Phase.READY and verdict.tail:
        console.print(f"  last {len(verdict.tail)} log lines:")
        for line in verdict.tail:
            console.print(shown(f"    {printable(line)}"), highlight=False, soft_wrap=True)


def print_layers(report: LayersReport, console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=shown(f"{report.image} ({report.image_id[7:19]})"))
    table.add_column("#", justify="right")
    table.add_column("size", justify="right")
    table.add_column("step", overflow="fold")
    table.add_column("model?", overflow="fold")
    table.add_column("status")
    for layer in report.layers:
        status = Text("FAIL", style="bold red") if layer.severity is Severity.FAIL else Text("ok", style="green")
        if not layer.model_step:
            status = Text("")
        step = redact_urls(f"{layer.instruction} {' '.join(layer.command.split())}".strip()) or "(base)"
        table.add_row(str(layer.index), human_bytes(layer.size), shown(printable(step)[:160]),
                      shown(layer.model_why), status)
    console.print(table)
    for layer in report.flagged:
        console.print(shown(f"layer {layer.index}: {layer.problem}", style="bold red"))
    for entry in report.unmatched:
        console.print(
            shown(f"manifest: {entry.key} ({human_bytes(entry.expected_bytes)}) matched no layer", style="yellow")
        )
    predicted = format_duration(report.predicted_unpack_s or 0.0)
    console.print(shown(
        f"total {human_bytes(report.total_bytes)} ({report.total_bytes} B), models {human_bytes(report.model_bytes)}; "
        f"predicted unpack on {report.data_root or 'data-root'} ({report.data_root_device or '?'}, "
        f"{report.data_root_class or '?'}): {predicted} at {report.write_mib_s:g} MiB/s ({report.write_source})"
    ))
    compressions = sorted({layer.compression for layer in report.layers if layer.compression})
    if compressions:
        console.print(shown(f"layer compression (from the registry): {', '.join(compressions)}"))
    elif report.registry_error:
        console.print(shown(f"layer compression unknown: {report.registry_error}"))
    if report.pull is not None:
        pull = report.pull
        console.print(shown(
            f"predicted pull: {format_duration(pull.total_s)} = download {format_duration(pull.download_s)} "
            f"+ decompression {format_duration(pull.decompress_s)} + files {format_duration(pull.files_s)} "
            f"+ write {format_duration(pull.write_s)} ({report.decompress_source})"
        ))
    else:
        console.print(shown(f"pull decompression: {report.decompress_source}"))
    if report.decompressor is not None:
        found = report.decompressor
        console.print(shown(f"gzip layers: {found.gzip} ({found.store} store, {found.process}): {found.why}"))
    if report.entries is not None:
        counted = report.entries
        console.print(shown(
            f"files: {counted.total} in {len(counted.per_layer)} layers, counted from {counted.source} in "
            f"{counted.seconds:.1f} s" if counted.per_layer else f"files: not counted ({counted.error})"
        ))
