"""Human-readable output: rich tables grouped by area."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.check import CheckReport
    from gpuhost.fleet import FleetReport

STYLE = {Severity.OK: "green", Severity.WARN: "yellow", Severity.FAIL: "bold red"}
AREA_ORDER = ("gpu", "bpf", "docker", "toolkit", "cdi", "devices", "storage", "ebs", "comfyui")


def severity_text(severity: Severity) -> Text:
    return Text(severity.value.upper(), style=STYLE[severity])


def _area_key(finding: Finding) -> tuple[int, str]:
    index = AREA_ORDER.index(finding.area) if finding.area in AREA_ORDER else len(AREA_ORDER)
    return index, finding.area


def findings_table(findings: list[Finding], title: str = "") -> Table:
    table = Table(title=title or None, show_lines=False, expand=False)
    table.add_column("area", style="bold")
    table.add_column("status")
    table.add_column("finding", overflow="fold")
    table.add_column("what to do", overflow="fold")
    last_area = None
    for finding in sorted(findings, key=_area_key):
        area = finding.area if finding.area != last_area else ""
        last_area = finding.area
        table.add_row(area, severity_text(finding.severity), finding.message, finding.remedy)
    return table


def inputs_table(report: CheckReport) -> Table:
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
        table.add_row(name, value)
    return table


def print_check(report: CheckReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(inputs_table(report))
    console.print(findings_table(report.findings, title=f"gpuhost check: {report.host}"))
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    summary = Text(f"{report.host}: ")
    summary.append(report.verdict.value.upper(), style=STYLE[report.verdict])
    summary.append(
        f"  ({counts[Severity.FAIL]} failing, {counts[Severity.WARN]} warning, {counts[Severity.OK]} ok; "
        f"{report.duration_ms:.0f} ms)"
    )
    if report.unreadable_sources:
        summary.append(f"  unreadable: {', '.join(report.unreadable_sources)}", style="bold red")
    console.print(summary)


def fleet_table(report: FleetReport) -> Table:
    table = Table(title="gpuhost check: fleet", expand=False)
    table.add_column("host", style="bold")
    table.add_column("address")
    table.add_column("verdict")
    table.add_column("failing", overflow="fold")
    table.add_column("time", justify="right")
    for host in report.hosts:
        table.add_row(
            host.name,
            host.address,
            severity_text(host.verdict),
            ", ".join(host.failing) or "-",
            f"{host.duration_ms / 1000:.1f} s",
        )
    return table


def print_fleet(report: FleetReport, console: Console | None = None) -> None:
    """A row per host, why the hosts that could not be checked were not, and one summary line."""
    console = console or Console()
    console.print(fleet_table(report))
    for host in report.hosts:
        if host.failure is not None:
            line = Text(f"{host.name}: ", style="bold")
            line.append(f"{host.failure.id} ", style=STYLE[Severity.FAIL])
            line.append(host.failure.message)
            if host.failure.remedy:
                line.append(f"  hint: {host.failure.remedy}", style="dim")
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
