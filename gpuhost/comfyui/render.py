"""Human output for wait-ready, check --workflow and layers (rich; the CLI only, never the agent)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpuhost.readiness import Phase

if TYPE_CHECKING:
    from gpuhost.comfyui.wait import Progress, WaitResult
    from gpuhost.layers import LayersReport
    from gpuhost.workflow import WorkflowReport

PHASE_STYLE = {Phase.READY: "bold green", Phase.STARTING: "yellow", Phase.FAILED: "bold red", Phase.STALLED: "bold red"}


class WaitProgress:
    """A live status line on stderr while waiting (nothing when stderr is not a terminal)."""

    def __init__(self, container: str) -> None:
        self.container = container
        self.console = Console(stderr=True)
        self._status: Any = None

    def __enter__(self) -> WaitProgress:
        if self.console.is_terminal:
            self._status = self.console.status(f"waiting for {self.container}")
            self._status.__enter__()
        return self

    def update(self, progress: Progress) -> None:
        if self._status is None:
            return
        last = " ".join(progress.last_line.split())[:80] or "(no output yet)"
        self._status.update(
            f"{self.container}: {progress.phase.value} {progress.elapsed_s:5.1f} s, {progress.lines_seen} lines, "
            f"probe {progress.last_probe or '-'} | {last}"
        )

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)


def print_wait(result: WaitResult, console: Console | None = None) -> None:
    console = console or Console(soft_wrap=True)
    verdict = result.verdict
    head = Text(f"{result.container}: ")
    head.append(verdict.phase.value.upper(), style=PHASE_STYLE[verdict.phase])
    if verdict.phase is not Phase.READY:
        head.append(f" ({verdict.reason})")
    head.append(f" after {result.elapsed_s:.1f} s")
    console.print(head)
    console.print(f"  {verdict.message}")
    if verdict.failing_line:
        console.print(Text(f"  failing line: {verdict.failing_line}", style="bold"))
    if verdict.remedy:
        console.print(f"  what to do: {verdict.remedy}")
    for warning in verdict.warnings:
        kind = "custom node" if warning.kind == "custom-node" else "comfy_extras node"
        reason = f": {warning.reason}" if warning.reason else ""
        console.print(Text(f"  warning: {kind} {warning.node} failed to import{reason}", style="yellow"))
    if verdict.notes:
        console.print(Text("  harmless: " + "; ".join(verdict.notes), style="dim"))
    if verdict.phase is not Phase.READY and verdict.tail:
        console.print(f"  last {len(verdict.tail)} log lines:")
        for line in verdict.tail:
            console.print(Text(f"    {line}"), highlight=False, soft_wrap=True)


def print_workflow(report: WorkflowReport, console: Console | None = None) -> None:
    import json

    console = console or Console(soft_wrap=True)
    title = f"workflow {report.path} against {report.server}/object_info (nothing queued)"
    if report.valid:
        console.print(Text(f"{title}: VALID, {report.nodes} nodes, outputs {', '.join(report.outputs)}", style="green"))
        return
    console.print(Text(f"{title}: {len(report.problems)} problem(s)", style="bold red"))
    for problem in report.problems:
        console.print(f"  node {problem.node_id or '-'} {problem.class_type}".rstrip(), highlight=False)
        console.print(f"    gpuhost says: {problem.sentence()}", highlight=False)
        console.print(
            f"    ComfyUI would answer POST /prompt: {problem.type}: {problem.details or problem.message}",
            highlight=False,
        )
    console.print(f"POST /prompt would answer HTTP {report.comfyui_status}:", highlight=False)
    console.print(json.dumps(report.comfyui_response), highlight=False, markup=False)


def print_layers(report: LayersReport, console: Console | None = None) -> None:
    from gpuhost.layers import human_bytes
    from gpuhost.model import Severity
    from gpuhost.unpack import format_duration

    console = console or Console()
    table = Table(title=f"{report.image} ({report.image_id[7:19]})")
    table.add_column("#", justify="right")
    table.add_column("size", justify="right")
    table.add_column("step", overflow="fold")
    table.add_column("model?", overflow="fold")
    table.add_column("status")
    for layer in report.layers:
        status = Text("FAIL", style="bold red") if layer.severity is Severity.FAIL else Text("ok", style="green")
        if not layer.model_step:
            status = Text("")
        step = f"{layer.instruction} {' '.join(layer.command.split())}".strip() or "(base)"
        table.add_row(str(layer.index), human_bytes(layer.size), step[:160], layer.model_why, status)
    console.print(table)
    for layer in report.flagged:
        console.print(Text(f"layer {layer.index}: {layer.problem}", style="bold red"))
    for entry in report.unmatched:
        console.print(Text(f"manifest: {entry.key} ({human_bytes(entry.expected_bytes)}) matched no layer",
                           style="yellow"))
    predicted = format_duration(report.predicted_unpack_s or 0.0)
    console.print(
        f"total {human_bytes(report.total_bytes)} ({report.total_bytes} B), models {human_bytes(report.model_bytes)}; "
        f"predicted unpack on {report.data_root or 'data-root'} ({report.data_root_device or '?'}, "
        f"{report.data_root_class or '?'}): {predicted} at {report.write_mib_s:g} MiB/s ({report.write_source})"
    )
