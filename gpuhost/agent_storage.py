"""The agent's storage subcommands: what the docker_storage role and its boot unit run on the host.

  storage-plan    which disks may be used and why the others are refused; data-root move plan
  storage-ensure  create (or find) the array and filesystem from the boot configuration
  storage-probe   measure the data-root filesystem's write throughput (and Docker's unpack rate)

Output is JSON. Exit codes: 0 done, 1 refused or failed (the JSON says why, nothing was
written), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from gpuhost.model import ExitCode, to_jsonable

Handler = Callable[[argparse.Namespace], int]


def _print(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _client(docker_host: str | None) -> Any:
    from gpuhost.engine import EngineClient

    return EngineClient(docker_host, timeout=30.0)


def plan_payload(plan: Any, data_root: Any) -> dict[str, Any]:
    disks = []
    for disk in plan.disks:
        entry = to_jsonable(disk)
        entry["accepted"] = disk.accepted
        disks.append(entry)
    return {
        "ok": plan.ok,
        "selection": plan.selection,
        "layout": plan.layout,
        "state": plan.state,
        "mount_path": plan.request.mount_path,
        "mount_source": plan.mount_source,
        "mount_unit": plan.mount_unit,
        "disks": disks,
        "refused": [{"path": d.path, "reasons": [r.message for r in d.refusals]} for d in plan.refused],
        "errors": plan.errors,
        "actions": plan.actions,
        "config": plan.config(),
        "data_root": to_jsonable(data_root) if data_root is not None else None,
    }


def _configured_fallback(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return str(json.load(fh).get("fallback_data_root") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def cmd_storage_plan(args: argparse.Namespace) -> int:
    from gpuhost.storage_move import plan_data_root
    from gpuhost.storage_plan import StorageRequest, plan_storage

    request = StorageRequest(
        devices=list(args.device or []),
        force=list(args.force or []),
        mount_path=args.mount_path,
        label=args.label,
        array_name=args.array_name or args.label,
        missing_disk_policy=args.missing_disk_policy,
        device_timeout_s=args.device_timeout,
    )
    data_root = plan_data_root(request.mount_path, args.daemon_json, _client(args.docker_host), move=not args.no_move)
    # the data-root Docker used before the move; once moved, the boot configuration remembers it
    request.fallback_data_root = args.fallback_data_root or (
        data_root.current if data_root.switch else _configured_fallback(args.config) or "/var/lib/docker"
    )
    plan = plan_storage(request)
    _print(plan_payload(plan, data_root))
    return int(ExitCode.OK if plan.ok and not data_root.blocked else ExitCode.FAILING)


def cmd_storage_ensure(args: argparse.Namespace) -> int:
    from gpuhost.storage_ensure import StorageError, ensure_storage, load_config

    if args.config == "-":
        config = load_config(sys.stdin.read(), "standard input")
    else:
        try:
            with open(args.config, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            from gpuhost.model import UsageError

            raise UsageError(f"{args.config}: {exc.strerror}", "Run the docker_storage role to write it.") from exc
        config = load_config(text, args.config)

    def log(message: str) -> None:
        sys.stderr.write(f"gpuhost-agent storage-ensure: {message}\n")
        sys.stderr.flush()

    try:
        result = ensure_storage(config, force=list(args.force or []), check=args.check, boot=args.boot, log=log)
    except StorageError as exc:
        log(f"error: {exc}")
        _print({"error": str(exc), "remedy": exc.remedy, "exit_code": int(ExitCode.FAILING)})
        return int(ExitCode.FAILING)
    if result.message:
        log(result.message)
    _print(to_jsonable(result))
    return int(ExitCode.OK)


def cmd_storage_probe(args: argparse.Namespace) -> int:
    from gpuhost.storage_probe import probe_storage

    report = probe_storage(
        path=args.path,
        size_mib=args.size_mib,
        unpack=args.unpack,
        image_bytes=args.image_bytes,
        client=_client(args.docker_host),
        record=args.record,
    )
    _print(to_jsonable(report))
    return int(ExitCode.OK)


def add_storage_commands(sub: Any, handlers: dict[str, Handler]) -> None:
    from gpuhost.storage_plan import CONFIG_PATH, DEFAULT_LABEL, DEFAULT_MOUNT_PATH, MISSING_DISK_POLICIES

    plan = sub.add_parser(
        "storage-plan",
        help="which disks Docker's data-root may take, why others are refused, and the data-root move (reads only)",
    )
    plan.add_argument("--device", action="append", help="a disk to use (repeat); none: every instance-store disk")
    plan.add_argument("--force", action="append", help="a named disk whose content may be destroyed (repeat)")
    plan.add_argument("--mount-path", default=DEFAULT_MOUNT_PATH)
    plan.add_argument("--label", default=DEFAULT_LABEL, help="XFS label (at most 12 characters)")
    plan.add_argument("--array-name", default="")
    plan.add_argument("--missing-disk-policy", choices=MISSING_DISK_POLICIES, default="fail")
    plan.add_argument("--device-timeout", type=int, default=90)
    plan.add_argument("--fallback-data-root", default="")
    plan.add_argument("--no-move", action="store_true", help="switch data-root without copying the old one")
    plan.add_argument("--daemon-json", default="/etc/docker/daemon.json")
    plan.add_argument("--docker-host", default=None)
    plan.add_argument("--config", default=CONFIG_PATH, help="an earlier run's boot configuration (read only)")
    handlers["storage-plan"] = cmd_storage_plan

    ensure = sub.add_parser(
        "storage-ensure", help="create (or find) the data-root array and filesystem; what the boot unit runs"
    )
    ensure.add_argument(
        "--config", default="/etc/gpuhost/docker-storage.json", help="the role's configuration, - for stdin"
    )
    ensure.add_argument("--force", action="append", help="a disk whose content may be destroyed (role runs only)")
    ensure.add_argument("--check", action="store_true", help="say what would be done, do nothing")
    ensure.add_argument("--boot", action="store_true", help="apply the missing-disk policy (wait, fail, fallback)")
    handlers["storage-ensure"] = cmd_storage_ensure

    probe = sub.add_parser("storage-probe", help="measure write throughput where data-root lives; predict unpack time")
    probe.add_argument("--path", default="", help="a directory on the filesystem to measure (default: data-root)")
    probe.add_argument("--size-mib", type=int, default=512)
    probe.add_argument("--unpack", action="store_true", help="also time `docker load` of a small image (Docker's rate)")
    probe.add_argument("--image-bytes", type=int, default=0, help="predict for this size (default: largest image)")
    probe.add_argument("--record", default="", help="also write the result to this JSON file")
    probe.add_argument("--docker-host", default=None)
    handlers["storage-probe"] = cmd_storage_probe
