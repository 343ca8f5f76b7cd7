"""`gpuhost storage`: look at disks before the docker_storage role touches them; measure the data-root."""

from __future__ import annotations

import typer

from gpuhost.cli.common import docs_epilog, emit_json, errors_to_exit, shown
from gpuhost.cli.table import typer_command
from gpuhost.engine import EngineClient
from gpuhost.model import for_humans, to_jsonable
from gpuhost.options import Values
from gpuhost.printable import printable
from gpuhost.storage.plan import STORAGE_PLAN, StoragePlan, StorageRequest, plan_docker_storage
from gpuhost.storage.probe import STORAGE_PROBE, measure_storage, probe_storage
from gpuhost.units import format_duration, parse_size

EXIT_CODES = (
    "Exit codes: 0 done (plan: every disk accepted); 1 a disk is refused or the data-root move is blocked; "
    "2 bad usage or input; 3 a required source could not be read."
)

storage_app = typer.Typer(
    help="Docker's data-root disks: which disks the docker_storage role may take, and how fast they unpack images.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def plan(values: Values) -> None:
    """Show which disks Docker's data-root may take and why every other disk is refused, and how
    data-root would move. Reads only: blkid -p, wipefs --no-act and gpuhost's own byte checks look for
    filesystems, partition tables, RAID/LVM/swap/crypto signatures; /sys and /proc tell the root disk,
    mounts, swap and holders. The JSON is what the docker_storage role reads (`gpuhost-agent storage-plan`).

    Examples:

      gpuhost storage plan

      gpuhost storage plan --device /dev/nvme1n1 --device /dev/nvme2n1

      gpuhost storage plan --device /dev/nvme1n1 --force /dev/nvme1n1 --json
    """
    as_json = values.json
    with errors_to_exit(as_json):
        request = StorageRequest.parse(**values.for_call(StorageRequest.parse))
        result = plan_docker_storage(
            request, values.daemon_json, EngineClient(values.docker_host, timeout=30.0), move=not values.no_move,
            config_path=values.config,
        )
    if as_json:
        emit_json(result.to_dict())
    else:
        print_plan(result)
    raise typer.Exit(int(result.exit_code))


def print_plan(result: StoragePlan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=shown(f"Disks for Docker's data-root ({result.selection})"))
    for column in ("disk", "size", "class", "model / serial", "verdict"):
        table.add_column(column)
    for disk in result.disks:
        reasons = "; ".join(r.message.split(": ", 1)[-1] for r in disk.refusals)
        if disk.accepted:
            verdict = shown("ours, nothing to do" if disk.ours else "accepted", style="green")
            if disk.forced and disk.refusals:
                verdict = shown("forced", style="yellow").append(shown(f": {reasons}"))
        else:
            verdict = shown("refused", style="red").append(shown(f": {reasons}"))
        device = disk.device
        identity = " / ".join(x for x in (device.model, device.ebs_volume_id or device.serial) if x)
        table.add_row(shown(disk.path), f"{device.size_bytes / 1e9:.0f} GB", shown(device.device_class),
                      shown(printable(identity)), verdict)
    console.print(table)
    if not result.disks:
        console.print("no disk: nothing named and no instance-store disk on this host")
    for action in result.actions:
        console.print(shown(f"would run: {action}"))
    if result.ok and result.state == "present":
        console.print(shown(f"already set up: {result.mount_source} at {result.request.mount_path}"))
    elif not result.ok:
        console.print(shown("refused: nothing would be written", style="red"))
    space = result.space
    if space is not None and space.needed_bytes:
        console.print(shown(f"space ({space.store} store): {space.message}",
                            style="" if space.ok else "red"))
    data_root = result.data_root
    if data_root is not None:
        if data_root.blocked:
            console.print(shown("data-root move blocked", style="red").append(shown(f": {data_root.blocked}")))
        elif data_root.switch:
            how = "copying its content first" if data_root.copy_data else "without copying"
            console.print(shown(f"data-root would move: {data_root.current} -> {data_root.target} ({how})"))
            if data_root.keep_storage_driver:
                console.print(shown(
                    f"storage-driver {data_root.keep_storage_driver} is kept in daemon.json: the copied images and "
                    "containers are stored with it"
                ))


def probe(values: Values) -> None:
    """Measure the write throughput of the filesystem under Docker's data-root (O_DIRECT, then fdatasync)
    and predict how long an image takes to unpack there. With the containerd image store, where
    the layers land is containerd's root, and that is what is measured.

    Examples:

      gpuhost storage probe

      gpuhost storage probe --path /mnt/docker --unpack --image-size 140GB --json
    """
    as_json = values.json
    with errors_to_exit(as_json):
        size = parse_size(values.image_size, "--image-size") if values.image_size else 0
        report = measure_storage(**values.for_call(
            probe_storage,
            image_bytes=size,
            client=EngineClient(values.docker_host, timeout=30.0),
            progress=None if as_json else lambda message: typer.echo(for_humans(message), err=True),
        ))
    if as_json:
        emit_json(to_jsonable(report))
        return
    assert report.write is not None
    where = f"{report.path} ({report.device or report.mountpoint}, {report.fstype}, {report.device_class})"
    mode = "direct I/O" if report.write.direct_io else "buffered + fdatasync"
    typer.echo(for_humans(f"{where}: writes {report.write.write_mib_s:.0f} MiB/s ({mode})"))
    if report.unpack is not None:
        rates = ", ".join(f"{kind} {rate:.0f}" for kind, rate in report.unpack.rates_mib_s.items())
        typer.echo(
            f"Docker unpacks layers at {rates} MiB/s on this host "
            f"(the median of {report.unpack.rounds} rounds each)"
        )
        for kind, why in report.unpack.unsupported.items():
            typer.echo(for_humans(f"{kind}: not measured: {printable(why)[:200]}"))
        if report.unpack.per_entry_us:
            costs = ", ".join(f"{kind} {cost:.0f}" for kind, cost in report.unpack.per_entry_us.items())
            typer.echo(f"each file costs {costs} µs beyond its bytes ({report.unpack.files_entries} small files, "
                       f"the median of {report.unpack.rounds} rounds)")
        if report.decompressor is not None:
            typer.echo(for_humans(
                f"{report.image_store} image store; gzip layers decompressed by "
                f"{report.decompressor.get('gzip')}: {printable(str(report.decompressor.get('why')))[:300]}"))
    typer.echo(for_humans(
        f"{report.image_ref} ({report.image_bytes / 1e9:.1f} GB) unpacks in about {report.predicted_unpack} "
        f"(the {report.device_class or 'other'} default of {report.default_write_mib_s:.0f} MiB/s would say "
        f"{format_duration(report.predicted_with_default_s)})"
    ))


storage_app.command("plan", epilog=docs_epilog("storage", EXIT_CODES))(typer_command(STORAGE_PLAN, plan))
storage_app.command("probe", epilog=docs_epilog("storage", EXIT_CODES))(typer_command(STORAGE_PROBE, probe))


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
