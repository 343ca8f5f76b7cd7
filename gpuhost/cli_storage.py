"""`gpuhost storage`: look at disks before the docker_storage role touches them; measure the data-root."""

from __future__ import annotations

from typing import Any, Optional

import typer

from gpuhost.model import ExitCode, SourceError, UsageError

EXIT_CODES = (
    "Exit codes: 0 done (plan: every disk accepted); 1 a disk is refused; 2 bad usage or input; "
    "3 a required source could not be read."
)

storage_app = typer.Typer(
    help="Docker's data-root disks: which disks the docker_storage role may take, and how fast they unpack images.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _fail(code: ExitCode, message: str, remedy: str, as_json: bool) -> None:
    from gpuhost.cli import fail

    fail(code, message, remedy, as_json)


@storage_app.command(epilog=EXIT_CODES)
def plan(
    device: Optional[list[str]] = typer.Option(
        None, "--device", "-d", help="A disk to use (repeat). None: every instance-store NVMe disk."
    ),
    force: Optional[list[str]] = typer.Option(
        None, "--force", help="A named disk whose content may be destroyed (repeat)."
    ),
    mount_path: str = typer.Option("/mnt/docker", "--mount-path", help="Where the role mounts the disk."),
    label: str = typer.Option("gh-docker", "--label", help="XFS label the role writes (12 characters at most)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (what the role reads)."),
) -> None:
    """Show which disks Docker's data-root may take and why every other disk is refused. Reads only:
    blkid -p, wipefs --no-act and gpuhost's own byte checks look for filesystems, partition tables,
    RAID/LVM/swap/crypto signatures; /sys and /proc tell the root disk, mounts, swap and holders.

    Examples:

      gpuhost storage plan

      gpuhost storage plan --device /dev/nvme1n1 --device /dev/nvme2n1

      gpuhost storage plan --device /dev/nvme1n1 --force /dev/nvme1n1 --json
    """
    from gpuhost.agent_storage import plan_payload
    from gpuhost.storage_plan import StorageRequest, plan_storage

    request = StorageRequest(devices=list(device or []), force=list(force or []), mount_path=mount_path, label=label)
    try:
        result = plan_storage(request)
    except UsageError as exc:
        _fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
        return
    code = ExitCode.OK if result.ok else ExitCode.FAILING
    if as_json:
        from gpuhost.cli import emit_json

        emit_json(plan_payload(result, None))
        raise typer.Exit(int(code))
    _print_plan(result)
    raise typer.Exit(int(code))


def _print_plan(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Disks for Docker's data-root ({result.selection})")
    for column in ("disk", "size", "class", "model / serial", "verdict"):
        table.add_column(column)
    for disk in result.disks:
        if disk.accepted:
            verdict = "[green]ours, nothing to do[/]" if disk.ours else "[green]accepted[/]"
            if disk.forced and disk.refusals:
                verdict = "[yellow]forced[/]: " + "; ".join(r.message.split(": ", 1)[-1] for r in disk.refusals)
        else:
            verdict = "[red]refused[/]: " + "; ".join(r.message.split(": ", 1)[-1] for r in disk.refusals)
        identity = " / ".join(x for x in (disk.model, disk.ebs_volume_id or disk.serial) if x)
        table.add_row(disk.path, f"{disk.size_bytes / 1e9:.0f} GB", disk.device_class, identity, verdict)
    console.print(table)
    if not result.disks:
        console.print("no disk: nothing named and no instance-store disk on this host")
    for action in result.actions:
        console.print(f"would run: {action}")
    if result.ok and result.state == "present":
        console.print(f"already set up: {result.mount_source} at {result.request.mount_path}")
    elif not result.ok:
        console.print("[red]refused: nothing would be written[/]")


@storage_app.command(epilog=EXIT_CODES)
def probe(
    path: str = typer.Option("", "--path", help="A directory on the filesystem to measure (default: data-root)."),
    size_mib: int = typer.Option(512, "--size-mib", min=16, help="How much to write (deleted again)."),
    unpack: bool = typer.Option(
        False, "--unpack", help="Also time `docker load` of a small image: Docker's own processing rate."
    ),
    image_size: str = typer.Option(
        "", "--image-size", help="Predict for this size (e.g. 140GB, 60GiB); default: the largest local image."
    ),
    docker_host: Optional[str] = typer.Option(None, "--docker-host", help="Docker daemon address."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """Measure the write throughput of the filesystem under Docker's data-root (O_DIRECT, then fdatasync)
    and predict how long an image takes to unpack there.

    Examples:

      gpuhost storage probe

      gpuhost storage probe --path /mnt/docker --unpack --image-size 140GB --json
    """
    from gpuhost.engine import EngineClient
    from gpuhost.model import to_jsonable
    from gpuhost.storage_probe import probe_storage
    from gpuhost.unpack import format_duration

    try:
        size = parse_size(image_size) if image_size else 0
        report = probe_storage(
            path=path, size_mib=size_mib, unpack=unpack, image_bytes=size, client=EngineClient(docker_host, 30.0)
        )
    except (UsageError, ValueError) as exc:
        _fail(ExitCode.USAGE, str(exc), getattr(exc, "remedy", ""), as_json)
        return
    except (SourceError, OSError) as exc:
        _fail(ExitCode.SOURCE_UNREADABLE, str(exc), "Run as root, on a writable filesystem.", as_json)
        return
    if as_json:
        from gpuhost.cli import emit_json

        emit_json(to_jsonable(report))
        return
    assert report.write is not None
    where = f"{report.path} ({report.device or report.mountpoint}, {report.fstype}, {report.device_class})"
    mode = "direct I/O" if report.write.direct_io else "buffered + fdatasync"
    typer.echo(f"{where}: writes {report.write.write_mib_s:.0f} MiB/s ({mode})")
    if report.unpack is not None:
        typer.echo(f"Docker unpacks {report.unpack.unpack_mib_s:.0f} MiB/s of layers on this host")
    typer.echo(
        f"{report.image_ref} ({report.image_bytes / 1e9:.1f} GB) unpacks in about {report.predicted_unpack} "
        f"(the {report.device_class or 'other'} default of {report.default_write_mib_s:.0f} MiB/s would say "
        f"{format_duration(report.predicted_with_default_s)})"
    )


def parse_size(text: str) -> int:
    """140GB -> 140e9 bytes, 60GiB -> 60 * 2**30, 512MiB, 2TB; a bare number is bytes."""
    units = {
        "": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
        "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
    }
    value = text.strip().upper()
    number = value.rstrip("KMGTIB")
    unit = value[len(number):]
    try:
        amount = float(number)
    except ValueError:
        raise UsageError(f"cannot read the size {text!r}", "Write it like 140GB or 60GiB.") from None
    if unit not in units or amount <= 0:
        raise UsageError(f"cannot read the size {text!r}", "Write it like 140GB or 60GiB.")
    return int(amount * units[unit])
