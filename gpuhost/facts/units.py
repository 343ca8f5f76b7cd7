"""systemd unit state of the units the rules ask about.

systemd has no file API for a unit's active state, so on the live host this is one `systemctl show`
call for all units; a captured tree carries that call's output in CAPTURE (scripts record it with
`systemctl show --property=... UNIT...`)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from gpuhost import userfile
from gpuhost.facts.source import SourceStatus

UNITS = (
    "nvidia-persistenced.service",
    "nvidia-fabricmanager.service",
    "nvidia-cdi-refresh.service",
    "nvidia-cdi-refresh.path",
    "unattended-upgrades.service",
    "apt-daily-upgrade.timer",
)
PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Result", "UnitFileState")
CAPTURE = "run/gpuhost-capture/systemctl-show.txt"
TIMEOUT_S = 5.0
MAX_OUTPUT = 256 * 1024


@dataclass
class UnitStatus:
    name: str
    load_state: str = ""  # loaded, not-found, masked
    active_state: str = ""  # active, inactive, failed, activating
    sub_state: str = ""  # running, exited, dead, failed, waiting
    result: str = ""  # success, exit-code, start-limit-hit, ...
    unit_file_state: str = ""  # enabled, disabled, masked, static

    @property
    def exists(self) -> bool:
        return self.load_state not in ("", "not-found")

    @property
    def active(self) -> bool:
        return self.active_state in ("active", "reloading", "activating")

    @property
    def failed(self) -> bool:
        return self.active_state == "failed" or self.result not in ("", "success")


@dataclass
class UnitFacts:
    status: SourceStatus = SourceStatus.OK
    error: str = ""
    source: str = ""
    units: dict[str, UnitStatus] = field(default_factory=dict)

    def get(self, name: str) -> UnitStatus | None:
        return self.units.get(name)


_FIELDS = {
    "LoadState": "load_state",
    "ActiveState": "active_state",
    "SubState": "sub_state",
    "Result": "result",
    "UnitFileState": "unit_file_state",
}


def parse_systemctl_show(text: str) -> dict[str, UnitStatus]:
    """`systemctl show -p Id,... A B` prints one KEY=value block per unit, blank-line separated."""
    units: dict[str, UnitStatus] = {}
    for block in text.strip().split("\n\n"):
        values: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
        name = values.get("Id")
        if not name:
            continue
        unit = UnitStatus(name=name)
        for key, attribute in _FIELDS.items():
            setattr(unit, attribute, values.get(key, ""))
        units[name] = unit
    return units


def collect_units(root: str = "/", names: tuple[str, ...] = UNITS) -> UnitFacts:
    facts = UnitFacts()
    if root != "/":
        path = os.path.join(root, CAPTURE)
        try:
            text = userfile.read_prefix(path, "", MAX_OUTPUT)
        except userfile.UserFileError as exc:
            if exc.missing:
                facts.status, facts.error = SourceStatus.ABSENT, f"{path}: no unit states captured"
            else:
                facts.status, facts.error = SourceStatus.UNREADABLE, str(exc)
            return facts
        facts.source = path
        facts.units = parse_systemctl_show(text)
        return facts
    if not os.path.isdir("/run/systemd/system"):
        facts.status, facts.error = SourceStatus.ABSENT, "systemd is not the init system here"
        return facts
    command = ["systemctl", "show", "--no-pager", "--property=" + ",".join(PROPERTIES), *names]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        facts.status, facts.error = SourceStatus.UNREADABLE, f"systemctl show: {exc}"
        return facts
    if done.returncode != 0 and not done.stdout:
        facts.status, facts.error = SourceStatus.UNREADABLE, f"systemctl show: {done.stderr.strip()[:200]}"
        return facts
    facts.source = "systemctl show"
    facts.units = parse_systemctl_show(done.stdout[:MAX_OUTPUT])
    return facts
