"""NVIDIA Container Toolkit facts: installed version, runtime mode, binaries, CDI writers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from gpuhost import userfile

try:
    import tomllib
except ImportError:  # Python < 3.11 on remote hosts
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

CONFIG_TOML = "etc/nvidia-container-runtime/config.toml"
PACKAGES = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
BINARIES = (
    "nvidia-ctk",
    "nvidia-container-runtime",
    "nvidia-container-runtime-hook",
    "nvidia-cdi-hook",
    "nvidia-container-cli",
)
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
# CDI spec writers: NVIDIA's refresh units (toolkit >= 1.18) and gpuhost's fallback unit.
CDI_WRITER_UNITS = ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service", "gpuhost-cdi-generate.service")


@dataclass
class UnitState:
    name: str
    installed: bool = False
    enabled: bool = False


@dataclass
class ToolkitFacts:
    installed: bool = False
    version: str = ""
    version_source: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    binaries: dict[str, str] = field(default_factory=dict)
    config_path: str = "/" + CONFIG_TOML
    config_present: bool = False
    config_error: str = ""
    mode: str = ""  # nvidia-container-runtime.mode; "auto" when unset
    config: dict[str, Any] = field(default_factory=dict)
    cdi_writer_units: list[UnitState] = field(default_factory=list)
    # nvidia-container-cli.ldconfig ("@/sbin/ldconfig": run the host's binary) and whether that binary exists
    ldconfig: str = ""
    ldconfig_exists: bool | None = None
    # nvidia-container-cli.no-cgroups (true only makes sense for rootless engines)
    no_cgroups: bool | None = None


def parse_dpkg_status(text: str, wanted: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") in wanted and fields.get("Status", "").endswith(" installed"):
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


_CTK_VERSION = re.compile(r"version\s+(\d+\.\d+\.\d+\S*)", re.IGNORECASE)


def _upstream(version: str) -> str:
    """1.20.0-1 -> 1.20.0; 1.17.8-1.amzn2023 -> 1.17.8."""
    return version.split("-", 1)[0].split(":")[-1]


def version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", _upstream(version))
    return tuple(int(p) for p in parts[:3])


def _unit_state(root: str, name: str) -> UnitState:
    state = UnitState(name=name)
    state.installed = any(os.path.exists(os.path.join(root, d, name)) for d in UNIT_DIRS)
    wants_root = os.path.join(root, "etc/systemd/system")
    try:
        for entry in os.listdir(wants_root):
            if entry.endswith((".wants", ".requires")) and os.path.lexists(
                os.path.join(wants_root, entry, name)
            ):
                state.enabled = True
                break
    except OSError:
        pass
    return state


def collect_toolkit(root: str = "/", path: str | None = None) -> ToolkitFacts:
    facts = ToolkitFacts(config_path=os.path.join(root, CONFIG_TOML))
    search_path = path or os.environ.get("PATH", "/usr/bin:/bin")
    if root != "/":
        search_path = os.pathsep.join(os.path.join(root, p.lstrip("/")) for p in search_path.split(os.pathsep))
    for binary in BINARIES:
        found = shutil.which(binary, path=search_path)
        if found:
            facts.binaries[binary] = found

    status = userfile.read_host_text(os.path.join(root, "var/lib/dpkg/status"), userfile.HOST_DATABASE_MAX)
    facts.packages = parse_dpkg_status(status) if status is not None else {}
    for package in ("nvidia-container-toolkit-base", "nvidia-container-toolkit"):
        if package in facts.packages:
            facts.version = _upstream(facts.packages[package])
            facts.version_source = f"dpkg:{package}"
            break
    if not facts.version and "nvidia-ctk" in facts.binaries:
        # rpm-based hosts: the CLI reports its own version (a static Go binary, ~10 ms)
        try:
            out = subprocess.run(
                [facts.binaries["nvidia-ctk"], "--version"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
            match = _CTK_VERSION.search(out)
            if match:
                facts.version = match.group(1)
                facts.version_source = "nvidia-ctk --version"
        except (OSError, subprocess.SubprocessError):
            pass
    facts.installed = bool(facts.version) or "nvidia-container-runtime" in facts.binaries

    try:
        facts.config = tomllib.loads(userfile.read_text(facts.config_path, "", userfile.HOST_CONFIG_MAX))
        facts.config_present = True
    except userfile.UserFileError as exc:
        facts.config_present = not exc.missing
        facts.config_error = "" if exc.missing else str(exc)
    except (ValueError, RecursionError) as exc:  # tomllib recurses into nested arrays and tables
        facts.config_present = True
        facts.config_error = f"{facts.config_path}: {exc if isinstance(exc, ValueError) else 'nested too deeply'}"
    runtime_section = facts.config.get("nvidia-container-runtime") or {}
    if facts.config_present and not facts.config_error:
        facts.mode = str(runtime_section.get("mode") or "auto")

    cli_section = facts.config.get("nvidia-container-cli") or {}
    if isinstance(cli_section, dict):
        if "ldconfig" in cli_section:
            facts.ldconfig = str(cli_section["ldconfig"])
            binary = facts.ldconfig.lstrip("@")
            facts.ldconfig_exists = os.path.isabs(binary) and os.path.isfile(os.path.join(root, binary.lstrip("/")))
        if "no-cgroups" in cli_section:
            facts.no_cgroups = bool(cli_section["no-cgroups"])

    facts.cdi_writer_units = [_unit_state(root, unit) for unit in CDI_WRITER_UNITS]
    return facts
