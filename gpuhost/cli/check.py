"""`gpuhost check` (this host, or a fleet over SSH): options in, report out."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from gpuhost.check import CheckOptions, add_findings, run_check
from gpuhost.cli.common import EXIT_CODES_HELP, docs_epilog, emit_json, errors_to_exit, shown
from gpuhost.cli.table import typer_command
from gpuhost.comfyui.facts import ready_comfyui_url
from gpuhost.comfyui.workflow import check_workflow, load_workflow, workflow_findings
from gpuhost.fleet.options import CHECK
from gpuhost.metrics.report import render_report
from gpuhost.model import Finding, Severity, UsageError
from gpuhost.options import Values
from gpuhost.redact import redact_all

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from gpuhost.check import CheckReport
    from gpuhost.comfyui.workflow import WorkflowReport
    from gpuhost.fleet.report import FleetReport

STYLE = {Severity.OK: "green", Severity.WARN: "yellow", Severity.FAIL: "bold red"}
AREA_ORDER = ("gpu", "bpf", "docker", "toolkit", "cdi", "devices", "storage", "ebs", "comfyui")


def check(values: Values) -> None:
    """Check this host: GPU and driver, the BPF device-filter exposure, Docker and the nvidia runtime,
    CDI specs, device permissions and Docker's data-root. With --host or --inventory, check those hosts
    over SSH instead (nothing installed there: the agent is copied for the run and removed; --root,
    --dev-root, --docker-host and --daemon-json then apply on each host); a host that cannot be reached
    or checked is a `fleet.*` finding of that host; exit 1 when any host fails.

    Examples:

      gpuhost check

      gpuhost check --json | jq '.findings[] | select(.severity=="fail")'

      gpuhost check --run-as 1000:1000 --min-free-gb 200

      gpuhost check --host ubuntu@gpu-01 --host gpu-02:2222 --become

      gpuhost check -i inventories/prod --limit 'gpu_hosts:!gpu-07' --forks 20 --json

      gpuhost check --workflow sd15-txt2img.api.json

      gpuhost check --format prometheus
    """
    output_format = values.format
    as_json = values.json or output_format == "json"
    hosts, inventory = values.host, values.inventory
    with errors_to_exit(as_json):
        if values.json and output_format not in ("table", "json"):
            raise UsageError(f"--json and --format {output_format} ask for two outputs: give one")
        if output_format == "prometheus" and (hosts or inventory):
            raise UsageError(
                "--format prometheus describes this host: on a fleet, each host's node_exporter serves its own "
                "(roles/gpuhost_metrics)"
            )
        options = CheckOptions.parse(**values.for_call(CheckOptions.parse, fleet=bool(hosts or inventory)))
        if (hosts or inventory) and (values.workflow or values.comfyui_url):
            raise UsageError("--workflow checks against this host's ComfyUI: not with --host/--inventory")
        if values.comfyui_url and not values.workflow:
            raise UsageError("--comfyui-url goes with --workflow FILE")
        if values.limit and not inventory:
            raise UsageError("--limit selects hosts of an inventory: pass --inventory too")
        if hosts or inventory:
            # paramiko and Ansible load only for fleet checks: a plain `gpuhost check` stays fast
            from gpuhost.fleet.inventory import load_inventory
            from gpuhost.fleet.runner import FleetOptions, run_fleet
            from gpuhost.fleet.targets import parse_host_spec

            fleet_options = FleetOptions.parse(**values.for_call(FleetOptions.parse, check=options))
            targets = [parse_host_spec(spec) for spec in hosts or []]
            if inventory:
                targets += load_inventory(inventory, values.limit)
            fleet_report = run_fleet(targets, fleet_options)
        else:
            fleet_report = None
            workflow_report = None
            workflow = values.workflow
            if workflow:
                load_workflow(workflow)  # bad input fails before anything is collected
            report = run_check(options.collect, options.rules, strict=options.strict)
            if workflow:
                workflow_report = check_workflow(
                    workflow, values.comfyui_url or ready_comfyui_url(report.facts.comfyui)
                )
                add_findings(report, workflow_findings(workflow_report), options.strict)
    if fleet_report is not None:
        if as_json:
            emit_json(fleet_report.to_dict())
        else:
            print_fleet(fleet_report)
        raise typer.Exit(int(fleet_report.exit_code))
    if output_format == "prometheus":
        sys.stdout.write(render_report(report))
    elif as_json:
        payload = report.to_dict()
        if workflow_report is not None:
            payload["workflow"] = workflow_report.to_dict()
        emit_json(payload)
    else:
        print_check(report)
        if workflow_report is not None:
            print_workflow(workflow_report)
    raise typer.Exit(int(report.exit_code))


def register(app: typer.Typer) -> None:
    app.command("check", epilog=docs_epilog("check", EXIT_CODES_HELP))(typer_command(CHECK, check))


# --- rendering ---------------------------------------------------------------------------------

def severity_text(severity: Severity) -> Text:
    from rich.text import Text
    return Text(severity.value.upper(), style=STYLE[severity])


def _area_key(finding: Finding) -> tuple[int, str]:
    index = AREA_ORDER.index(finding.area) if finding.area in AREA_ORDER else len(AREA_ORDER)
    return index, finding.area


def findings_table(findings: list[Finding], title: str = "") -> Table:
    from rich.table import Table
    table = Table(title=shown(title) if title else None, show_lines=False, expand=False)
    table.add_column("area", style="bold")
    table.add_column("status")
    table.add_column("finding", overflow="fold")
    table.add_column("what to do", overflow="fold")
    last_area = None
    for finding in sorted(findings, key=_area_key):
        area = finding.area if finding.area != last_area else ""
        last_area = finding.area
        table.add_row(shown(area), severity_text(finding.severity), shown(finding.message), shown(finding.remedy))
    return table


def inputs_table(report: CheckReport) -> Table:
    from rich.table import Table
    facts = report.facts
    kernel, docker, toolkit = facts.kernel, facts.docker, facts.toolkit
    table = Table(title="BPF device-filter inputs", show_header=False)
    table.add_column("input", style="bold")
    table.add_column("value")
    rows = [
        ("kernel", kernel.release or "?"),
        ("cgroup", f"v{kernel.cgroup_version} ({kernel.cgroup_mode or '?'})"),
        ("net.core.bpf_jit_harden", str(kernel.bpf_jit_harden)),
        ("docker / runc", f"{docker.server_version or '-'} / {docker.runc_version or '-'}"),
        ("toolkit / mode", f"{toolkit.version or '-'} / {toolkit.mode or '-'}"),
        ("default runtime", docker.default_runtime or "-"),
        ("CDI enabled", "-" if docker.cdi_enabled is None else str(docker.cdi_enabled).lower()),
        ("CDI specs", ", ".join(s.path for s in facts.cdi.specs) or "none"),
    ]
    for name, value in rows:
        table.add_row(name, shown(value))
    return table


def print_check(report: CheckReport, console: Console | None = None) -> None:
    from rich.console import Console
    console = console or Console()
    console.print(inputs_table(report))
    console.print(findings_table(report.findings, title=f"gpuhost check: {report.host}"))
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    summary = shown(f"{report.host}: ")
    summary.append(report.verdict.value.upper(), style=STYLE[report.verdict])
    summary.append(
        f"  ({counts[Severity.FAIL]} failing, {counts[Severity.WARN]} warning, {counts[Severity.OK]} ok; "
        f"{report.duration_ms:.0f} ms)"
    )
    if report.unreadable_sources:
        summary.append(f"  unreadable: {', '.join(report.unreadable_sources)}", style="bold red")
    console.print(summary)


def fleet_table(report: FleetReport) -> Table:
    from rich.table import Table
    table = Table(title="gpuhost check: fleet", expand=False)
    table.add_column("host", style="bold")
    table.add_column("address")
    table.add_column("verdict")
    table.add_column("failing", overflow="fold")
    table.add_column("time", justify="right")
    for host in report.hosts:
        table.add_row(
            shown(host.name),
            shown(host.address),
            severity_text(host.verdict),
            shown(", ".join(host.failing) or "-"),
            f"{host.duration_ms / 1000:.1f} s",
        )
    return table


def print_fleet(report: FleetReport, console: Console | None = None) -> None:
    """A row per host, why the hosts that could not be checked were not, and one summary line."""
    from rich.console import Console
    from rich.text import Text
    console = console or Console()
    console.print(fleet_table(report))
    for host in report.hosts:
        if host.failure is not None:
            line = shown(f"{host.name}: ", style="bold")
            line.append(shown(f"{host.failure.id} ", style=STYLE[Severity.FAIL]))
            line.append(shown(host.failure.message))
            if host.failure.remedy:
                line.append(shown(f"  hint: {host.failure.remedy}", style="dim"))
            console.print(line)
    counts = report.summary()
    summary = Text(f"{counts['hosts']} hosts: ")
    summary.append(f"{counts['ok']} ok", style=STYLE[Severity.OK])
    summary.append(", ")
    summary.append(f"{counts['warn']} warn", style=STYLE[Severity.WARN])
    summary.append(", ")
    summary.append(f"{counts['fail']} fail", style=STYLE[Severity.FAIL])
    summary.append(f" ({counts['unreached']} not checked); {report.duration_ms / 1000:.1f} s, forks {report.forks}")
    console.print(summary)


def print_workflow(report: WorkflowReport, console: Console | None = None) -> None:
    import json

    from rich.console import Console

    console = console or Console(soft_wrap=True)
    title = f"workflow {report.path} against {report.server}/object_info (nothing queued)"
    if report.valid:
        console.print(shown(f"{title}: VALID, {report.nodes} nodes, outputs {', '.join(report.outputs)}", "green"))
    else:
        console.print(shown(f"{title}: {len(report.problems)} problem(s)", style="bold red"))
    for warning in report.warnings:
        console.print(shown(f"  warning: node {warning.node_id} ({warning.class_type}): {warning.message}",
                            style="yellow"), highlight=False)
    if report.valid:
        return
    for problem in report.problems:
        console.print(shown(f"  node {problem.node_id or '-'} {problem.class_type}".rstrip()), highlight=False)
        console.print(shown(f"    gpuhost says: {problem.sentence()}"), highlight=False)
        console.print(
            shown(f"    ComfyUI would answer POST /prompt: {problem.type}: {problem.details or problem.message}"),
            highlight=False,
        )
    console.print(f"POST /prompt would answer HTTP {report.comfyui_status}:", highlight=False)
    console.print(shown(json.dumps(redact_all(report.to_dict()["comfyui_would_answer"]["body"]))), highlight=False)
