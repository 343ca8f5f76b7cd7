"""`gpuhost tune-ebs`: options in, the plan as a table, the result as one line, a progress bar for --wait."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from gpuhost.cli.common import docs_epilog, emit_json, errors_to_exit, shown
from gpuhost.cli.help import ReferenceCommand
from gpuhost.cli.table import typer_command
from gpuhost.ebs.tune import TUNE_EBS, TuneOptions, run
from gpuhost.options import Values
from gpuhost.printable import printable
from gpuhost.units import format_duration

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from gpuhost.ebs.plan import Plan
    from gpuhost.ebs.tune import TuneResult

TUNE_EBS_EXIT_CODES = (
    "Exit codes: 0 the volume is at the target (changed now, already there, or --dry-run planned it); "
    "1 the change cannot be made now (a modification is running, AWS's modification limit, throttling, "
    "--wait timed out or the modification failed, --when-image-present not yet true); "
    "2 bad usage or input, nothing was changed (invalid value, wrong volume type, unknown volume, no region); "
    "3 AWS could not be reached or refused access (credentials missing or expired, UnauthorizedOperation, "
    "endpoint or instance metadata unreachable, too slow or answering what the EC2 API does not), or a server "
    "at DOCKER_HOST is not Docker."
)


def tune_ebs(values: Values) -> None:
    """Raise (or lower) an EBS gp3 volume's IOPS and throughput live, priced and predicted, within AWS's limits.

    Without --volume-id it tunes the instance's own root volume (or, with --target data-root, the volume
    under Docker's data-root), found through IMDSv2 and describe-instances. Everything that can be checked
    without AWS is checked before the first call, and no ModifyVolume call is made when the volume is already
    at the target.

    The plan shows current -> target, the monthly cost delta (per-region list prices), the predicted unpack
    time of an image before and after (140 GB unless --for-image-size says otherwise), and where the volume
    stands with AWS's modification rule.

    Limits (botocore 1.44.8 EC2 model): gp3 1-65,536 GiB, 3,000-80,000 IOPS and 125-2,000 MiB/s, with at most
    0.25 MiB/s per provisioned IOPS and 500 IOPS per GiB.

    Modification rule: AWS accepts the next modification of a volume once the previous one is completed, and
    at most four in any 24 hours (earlier AWS rules asked for six hours between two; that is the "six-hour
    cooldown"). Reverting to baseline after a pull is one more modification: plan for it.

    Examples:
    To see what raising this instance's root volume for a pull costs and gains, changing nothing:
      gpuhost tune-ebs --preset pull --dry-run

    To raise it and follow the modification until the new performance is being applied:
      gpuhost tune-ebs --preset pull --wait

    To set explicit values on a named volume:
      gpuhost tune-ebs --volume-id vol-0123456789abcdef0 --region us-east-1 --iops 6000 --throughput 500

    To buy just enough throughput to unpack a 140 GB image in 5 minutes, as JSON:
      gpuhost tune-ebs --target data-root --for-image-size 140GB --within 5m --json

    To convert a gp2 volume to gp3 at the baseline:
      gpuhost tune-ebs --volume-id vol-0123456789abcdef0 --to-gp3 --preset baseline

    To go back to the baseline once Docker has the image (exit 1 until then):
      gpuhost tune-ebs --preset baseline --when-image-present comfyui:0.3.64

    Output:
    With --json, one object (schema gpuhost.tune-ebs/v1):
      action          modified | none (already at target) | planned (--dry-run) | blocked | waiting
      changed         true only when a modification was requested now
      would_change    true when the target differs from the volume's current settings
      selection       how the volume was found (volume-id, root, data-root) and its instance
      plan            current and target (volume_type, size_gib, iops, throughput_mibs), changes,
                      cost (current_month, target_month, delta_month, delta_day, price_region, source),
                      unpack (image_bytes, before_s, after_s), modification_gate (allowed, reason,
                      modifications_in_window, next_change_at), revert, notes
      modification    the modification AWS started (state, progress, start_time)
      wait            with --wait: state reached, waited_s, timed_out, failed
      exit_code       as below; errors print {"error", "remedy", "exit_code"} instead
    """
    as_json = values.json
    with errors_to_exit(as_json):
        options = TuneOptions.parse(**values.for_call(TuneOptions.parse))
        if options.wait and not as_json:
            with WaitProgress() as progress:
                result = run(options, on_progress=progress.update)
        else:
            result = run(options)
    if as_json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    raise typer.Exit(int(result.exit_code))


def register(app: typer.Typer) -> None:
    app.command("tune-ebs", epilog=docs_epilog("tune-ebs", TUNE_EBS_EXIT_CODES), cls=ReferenceCommand)(
        typer_command(TUNE_EBS, tune_ebs, reference=True)
    )


# --- rendering ---------------------------------------------------------------------------------

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
    from rich.table import Table
    table = Table(title=shown(title), show_header=True)
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
        table.add_row(*(shown(cell) for cell in row))
    return table


def print_result(result: TuneResult, console: Console | None = None) -> None:
    from rich.console import Console
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
            console.print(shown(f"note: {note}"))
        if not plan.at_target:
            console.print(shown(plan.revert_note(), style="dim"))
    line = shown(f"{result.action}: ", style=ACTION_STYLE.get(result.action, ""))
    line.append(shown(result.message))
    console.print(line)


class WaitProgress:
    """A progress bar on stderr fed by wait_for_modification's updates."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
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
            description=printable(f"{modification.volume_id} {modification.state}"),
        )
