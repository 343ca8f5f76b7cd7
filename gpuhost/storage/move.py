"""Where Docker's data-root is now, where it should go, and whether moving it is safe.

The docker_storage role switches data-root through the single daemon.json writer and copies
the old directory when it holds images; this module decides, from the Engine API (when Docker
runs) or daemon.json (when it does not, or is not installed yet), what that takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpuhost.engine import EngineBadAnswer, EngineError, EnginePermissionDenied, EngineUnavailable
from gpuhost.facts.docker import read_daemon_json
from gpuhost.model import UsageError
from gpuhost.storage.space import store_in_use

if TYPE_CHECKING:
    from gpuhost.engine import EngineClient

DEFAULT_DATA_ROOT = "/var/lib/docker"
# The storage drivers Docker picks by itself on an XFS data-root (classic store, containerd store).
AUTOMATIC_DRIVERS = ("overlay2", "overlayfs")


@dataclass
class DataRootPlan:
    current: str
    target: str
    source: str  # engine, daemon.json or default
    docker_running: bool = False
    live_restore: bool = False
    running_containers: list[str] = field(default_factory=list)
    old_has_data: bool = False
    switch: bool = False  # daemon.json must change
    copy_data: bool = False  # the old directory is copied first
    blocked: str = ""  # why the switch cannot happen now ("" when it can)
    images: int | None = None
    storage_driver: str = ""  # the driver the old data-root's content is stored with ("" unknown)
    # set in daemon.json with data-root: the copied images and containers are only readable by the
    # driver that wrote them, and Docker would pick overlay2 on the new disk by itself
    keep_storage_driver: str = ""
    # the image store Docker uses ("classic" or "containerd") and how that is known
    image_store: str = "classic"
    image_store_source: str = ""


def _has_entries(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def _driver_on_disk(data_root: str) -> str:
    """The storage driver whose image metadata a data-root holds (`image/<driver>`), when exactly one."""
    try:
        with os.scandir(os.path.join(data_root, "image")) as entries:
            drivers = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return ""
    return drivers[0] if len(drivers) == 1 else ""


def plan_data_root(
    target: str,
    daemon_json_path: str = "/etc/docker/daemon.json",
    client: EngineClient | None = None,
    move: bool = True,
) -> DataRootPlan:
    target = os.path.normpath(target)
    config, error = read_daemon_json(daemon_json_path)
    if error:
        raise UsageError(f"{error}; fix it by hand first (the daemon.json writer never replaces an invalid file)")
    configured = str((config or {}).get("data-root") or (config or {}).get("graph") or "")
    plan = DataRootPlan(
        current=os.path.normpath(configured) if configured else DEFAULT_DATA_ROOT,
        target=target,
        source="daemon.json" if configured else "default",
    )
    info = None
    if client is not None:
        try:
            info = client.get("/info")
        except EngineBadAnswer:
            raise  # something answers there, but not Docker: planning as if Docker were stopped would be wrong
        except (EngineUnavailable, EnginePermissionDenied, EngineError, OSError):
            info = None
        if isinstance(info, dict):
            plan.docker_running = True
            plan.current = os.path.normpath(str(info.get("DockerRootDir") or plan.current))
            plan.source = "engine"
            plan.live_restore = bool(info.get("LiveRestoreEnabled"))
            plan.images = int(info.get("Images") or 0)
            plan.storage_driver = str(info.get("Driver") or "")
            if plan.live_restore and int(info.get("ContainersRunning") or 0):
                listed = client.get("/containers/json") or []
                plan.running_containers = sorted(
                    str((c.get("Names") or ["?"])[0]).lstrip("/") for c in listed if isinstance(c, dict)
                )
    plan.image_store, plan.image_store_source = store_in_use(info if isinstance(info, dict) else None, config)
    plan.switch = plan.current != target
    plan.old_has_data = plan.switch and _has_entries(plan.current)
    plan.copy_data = plan.switch and move and plan.old_has_data
    if plan.copy_data and not plan.storage_driver:
        plan.storage_driver = _driver_on_disk(plan.current)
    configured_driver = str((config or {}).get("storage-driver") or "")
    if plan.copy_data and not configured_driver and plan.storage_driver not in ("", *AUTOMATIC_DRIVERS):
        plan.keep_storage_driver = plan.storage_driver
    if plan.switch and plan.running_containers:
        plan.blocked = (
            f"Docker runs with live-restore, so stopping it leaves {len(plan.running_containers)} container(s) "
            f"running on the old data-root ({', '.join(plan.running_containers)}); stop them first "
            "(docker stop ...), then run the role again"
        )
    return plan
