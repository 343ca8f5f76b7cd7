"""tune-ebs for people: the plan as a table, the result as one line, a progress bar for --wait."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpuhost.unpack import format_duration

if TYPE_CHECKING:
    from gpuhost.ebs.plan import Plan
    from gpuhost.ebs.tune import TuneResult

ACTION_STYLE = {
    "modified": "bold green",
    "none": "green",
    "planned": "cyan",
    "blocked": "bold yellow",
    "waiting": "yellow",
}


def _n(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,}{unit}"


def plan_table(plan: Plan, title: str) -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("", style="bold")
    table.add_column("current", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    current, target = plan.current, plan.target
    cost = plan.cost
    unpack = plan.unpack
    price_note = f"{cost.price_region} list prices"
    if cost.price_region != cost.region:
        price_note = f"no {cost.region} prices in the table: {cost.price_region}'s"
    size_note = "reference size: set --for-image-size" if unpack.reference else ""
    rows = [
        ("type", current.volume_type, target.volume_type, ""),
        ("size", _n(current.size_gib, " GiB"), _n(target.size_gib, " GiB"), ""),
        ("IOPS", _n(current.iops), _n(target.iops), ""),
        ("throughput", _n(current.throughput_mibs, " MiB/s"), _n(target.throughput_mibs, " MiB/s"), ""),
        (
            "cost / month",
            f"${cost.current_month:,.2f}",
            f"${cost.target_month:,.2f}",
            f"{cost.delta_month:+,.2f} USD/month, {cost.delta_day:+,.2f}/day ({price_note})",
        ),
        (
            f"unpack {unpack.image_bytes / 1e9:.0f} GB",
            format_duration(unpack.before_s),
            format_duration(unpack.after_s),
            f"at {unpack.before_mibs:,.0f} -> {unpack.after_mibs:,.0f} MiB/s" + (f"; {size_note}" if size_note else ""),
        ),
    ]
    gate = plan.gate
    allowed = "allowed now" if gate.allowed else f"not now: {gate.reason}"
    rows.append(
        (
            "modifications",
            f"{gate.recent} in {gate.rule.window_hours:g} h",
            f"max {gate.rule.max_per_window}",
            allowed,
        )
    )
    for row in rows:
        table.add_row(*row)
    return table


def print_result(result: TuneResult, console: Console | None = None) -> None:
    console = console or Console()
    plan = result.plan
    if plan is not None:
        where = f"{plan.volume.volume_id} in {plan.region}"
        selection = result.selection
        if selection is not None and selection.by != "volume-id":
            owner = f" of {selection.instance_id}" if selection.instance_id else ""
            where += f" ({selection.by} volume{owner}, {selection.device or selection.path})"
        console.print(plan_table(plan, where))
        for note in plan.notes:
            console.print(f"note: {note}")
        if not plan.at_target:
            console.print(Text(plan.revert_note(), style="dim"))
    line = Text(f"{result.action}: ", style=ACTION_STYLE.get(result.action, ""))
    line.append(result.message)
    console.print(line)


class WaitProgress:
    """A progress bar on stderr fed by wait_for_modification's updates."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("modifying", total=100)
        self._started = False

    def __enter__(self) -> WaitProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    def update(self, modification: Any, elapsed: float) -> None:
        if not self._started:
            # only once there is a modification to follow, not while planning
            self._progress.start()
            self._started = True
        self._progress.update(
            self._task,
            completed=modification.progress or 0,
            description=f"{modification.volume_id} {modification.state}",
        )
