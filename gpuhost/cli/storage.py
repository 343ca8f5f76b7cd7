"""`gpuhost storage`: look at disks before the docker_storage role touches them; measure the data-root."""

from __future__ import annotations

from typing import Optional

import typer

from gpuhost.cli.common import docker_host_option, docs_epilog, emit_json, engine_client, errors_to_exit, shown
from gpuhost.model import SourceError, UsageError, for_humans, to_jsonable
from gpuhost.printable import printable
from gpuhost.storage.plan import (
    CONFIG_PATH,
    DEFAULT_LABEL,
    DEFAULT_MOUNT_PATH,
    StoragePlan,
    StorageRequest,
    plan_docker_storage,
)
from gpuhost.storage.probe import DEFAULT_UNPACK_PROBE_BYTES, probe_storage
from gpuhost.units import MIB, format_duration, parse_size

EXIT_CODES = (
    "Exit codes: 0 done (plan: every disk accepted); 1 a disk is refused or the data-root move is blocked; "
    "2 bad usage or input; 3 a required source could not be read."
)

storage_app = typer.Typer(
    help="Docker's data-root disks: which disks the docker_storage role may take, and how fast they unpack images.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@storage_app.command(epilog=docs_epilog("storage", EXIT_CODES))
def plan(
    device: Optional[list[str]] = typer.Option(
        None, "--device", "-d", help="A disk to use (repeat). None: every instance-store NVMe disk."
    ),
    force: Optional[list[str]] = typer.Option(
        None, "--force", help="A named disk whose content may be destroyed (repeat)."
    ),
    mount_path: str = typer.Option(DEFAULT_MOUNT_PATH, "--mount-path", help="Where the role mounts the disk."),
    label: str = typer.Option(DEFAULT_LABEL, "--label", help="XFS label the role writes (12 characters at most)."),
    array_name: str = typer.Option(
        "", "--array-name", help="The md RAID0 array's name when several disks are used (default: the label)."
    ),
    missing_disk_policy: str = typer.Option(
        "fail", "--missing-disk-policy", metavar="wait|fail|fallback", help="What the boot unit does without its disks."
    ),
    device_timeout: int = typer.Option(90, "--device-timeout", help="Seconds the boot unit waits for the disks."),
    fallback_data_root: str = typer.Option(
        "",
        "--fallback-data-root",
        help="Data-root for the fallback policy (default: Docker's data-root before the move).",
    ),
    no_move: bool = typer.Option(False, "--no-move", help="Switch data-root without copying the old one."),
    image_size: str = typer.Option(
        "", "--image-size",
        help="The image the disk must hold (e.g. 140GB, 60GiB); default: the largest local image, if any.",
    ),
    image_store: str = typer.Option(
        "auto", "--image-store",
        help="auto (the store Docker uses), classic (one copy) or containerd (each layer's blob beside it: twice).",
    ),
    daemon_json: str = typer.Option("/etc/docker/daemon.json", "--daemon-json", help="Docker's daemon.json."),
    docker_host: Optional[str] = docker_host_option(),
    config: str = typer.Option(CONFIG_PATH, "--config", help="An earlier run's boot configuration (read only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (what the role reads)."),
) -> None:
    """Show which disks Docker's data-root may take and why every other disk is refused, and how
    data-root would move. Reads only: blkid -p, wipefs --no-act and gpuhost's own byte checks look for
    filesystems, partition tables, RAID/LVM/swap/crypto signatures; /sys and /proc tell the root disk,
    mounts, swap and holders. The JSON is what the docker_storage role reads (`gpuhost-agent storage-plan`).

    Examples:

      gpuhost storage plan

      gpuhost storage plan --device /dev/nvme1n1 --device /dev/nvme2n1

      gpuhost storage plan --device /dev/nvme1n1 --force /dev/nvme1n1 --json
    """
    with errors_to_exit(as_json):
        request = StorageRequest.parse(
            devices=device,
            force=force,
            mount_path=mount_path,
            label=label,
            array_name=array_name,
            missing_disk_policy=missing_disk_policy,
            device_timeout=device_timeout,
            fallback_data_root=fallback_data_root,
            image_size=image_size,
            image_store=image_store,
        )
        result = plan_docker_storage(
            request, daemon_json, engine_client(docker_host, 30.0), move=not no_move, config_path=config
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
        identity = " / ".join(x for x in (disk.model, disk.ebs_volume_id or disk.serial) if x)
        table.add_row(shown(disk.path), f"{disk.size_bytes / 1e9:.0f} GB", shown(disk.device_class),
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


@storage_app.command(epilog=docs_epilog("storage", EXIT_CODES))
def probe(
    path: str = typer.Option(
        "", "--path",
        help="A directory on the filesystem to measure (default: where layers land: data-root, or containerd's "
        "root with the containerd image store).",
    ),
    size_mib: int = typer.Option(512, "--size-mib", help="How much to write (deleted again)."),
    unpack: bool = typer.Option(
        False,
        "--unpack",
        help="Also time `docker pull` of an image from a registry of the probe's own on 127.0.0.1, uncompressed, "
        "gzip and zstd, 3 rounds each, until the data is on the device, and of a layer of small files: Docker's "
        "own rate per layer compression and its cost per file, on its image store with its gzip decompressor "
        "(a few minutes). A daemon that cannot reach 127.0.0.1 here is timed loading an archive.",
    ),
    unpack_mib: int = typer.Option(
        DEFAULT_UNPACK_PROBE_BYTES // MIB,
        "--unpack-mib",
        help="The --unpack image's size in MiB; smaller than 1024 measures a rate a large image will not reach.",
    ),
    image_size: str = typer.Option(
        "", "--image-size", help="Predict for this size (e.g. 140GB, 60GiB); default: the largest local image."
    ),
    compressions: str = typer.Option(
        "none,gzip,zstd", "--compressions",
        help="The layer compressions --unpack measures, comma-separated (the first one's rounds also pull the "
        "small-files image): `gzip` alone re-measures gzip after the decompressor changed.",
    ),
    record: str = typer.Option(
        "", "--record", metavar="PATH",
        help="Also write the result to this JSON file (absolute path), for `gpuhost layers --probe-record` and "
        "`gpuhost check`; the role records /var/lib/gpuhost/storage-probe.json.",
    ),
    docker_host: Optional[str] = docker_host_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """Measure the write throughput of the filesystem under Docker's data-root (O_DIRECT, then fdatasync)
    and predict how long an image takes to unpack there. With the containerd image store, where
    the layers land is containerd's root, and that is what is measured.

    Examples:

      gpuhost storage probe

      gpuhost storage probe --path /mnt/docker --unpack --image-size 140GB --json
    """
    with errors_to_exit(as_json):
        size = parse_size(image_size, "--image-size") if image_size else 0
        try:
            report = probe_storage(
                path=path,
                size_mib=size_mib,
                unpack=unpack,
                image_bytes=size,
                client=engine_client(docker_host, 30.0),
                unpack_mib=unpack_mib,
                record=record,
                compressions=compressions,
                progress=None if as_json else lambda message: typer.echo(for_humans(message), err=True),
            )
        except OSError as exc:
            raise SourceError(path or "data-root", str(exc), "Run as root, on a writable filesystem.") from exc
        except ValueError as exc:  # too little room for the probe
            raise UsageError(str(exc), "Give a smaller --size-mib or a --path with more free space.") from exc
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


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
