"""GPU and driver facts through NVML (nvidia-ml-py, imported as pynvml)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from gpuhost import userfile
from gpuhost.facts.source import SourceStatus

T = TypeVar("T")


@dataclass
class GpuDevice:
    index: int
    name: str = ""
    uuid: str = ""
    pci_bus_id: str = ""
    minor_number: int | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    persistence_mode: bool | None = None
    ecc_enabled: bool | None = None
    ecc_pending: bool | None = None
    # (correctable, uncorrectable, pending, failure) as NVML reports them
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    temperature_c: int | None = None
    compute_capability: str = ""
    mig_enabled: bool | None = None
    # a MIG mode change waiting for a GPU reset
    mig_pending: bool | None = None
    # pages retired but not yet in effect until the GPU is reset (pre-Ampere; NotSupported on newer GPUs)
    retired_pages_pending: bool | None = None
    # NVSwitch fabric registration (Hopper and newer): not-supported, not-started, in-progress, completed
    fabric_state: str = ""
    # the NVML return code of the registration, 0 when it succeeded
    fabric_status: int | None = None


FABRIC_STATES = {0: "not-supported", 1: "not-started", 2: "in-progress", 3: "completed"}


@dataclass
class ProcDriverVersion:
    version: str = ""
    open_kernel_module: bool | None = None
    raw: str = ""


@dataclass
class GpuFacts:
    status: SourceStatus = SourceStatus.OK
    error: str = ""
    # why NVML initialisation failed, as NVIDIA's Go tools (nvidia-container-runtime, nvidia-ctk) print it after
    # "failed to initialize NVML: ": ERROR_LIBRARY_NOT_FOUND, or NVML's own error string ("Unknown Error")
    nvml_error: str = ""
    driver_version: str = ""
    cuda_driver_version: str = ""
    nvml_version: str = ""
    gpus: list[GpuDevice] = field(default_factory=list)
    proc_driver: ProcDriverVersion | None = None
    # /proc/driver/nvidia/params (the module's NVreg_ options as loaded), e.g. EnableGpuFirmware
    params: dict[str, str] = field(default_factory=dict)
    # per PCI address, the "GPU Firmware" line of /proc/driver/nvidia/gpus/*/information: the GSP
    # firmware version when GSP runs, "N/A" when it does not
    gpu_firmware: dict[str, str] = field(default_factory=dict)


_PROC_VERSION = re.compile(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s")


def parse_proc_driver_version(text: str) -> ProcDriverVersion:
    """Parse /proc/driver/nvidia/version (present whenever the kernel module is loaded)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    match = _PROC_VERSION.search(first + " ")
    return ProcDriverVersion(
        version=match.group(1) if match else "",
        open_kernel_module=("Open Kernel Module" in first) if first else None,
        raw=first,
    )


def read_proc_driver_version(root: str = "/") -> ProcDriverVersion | None:
    text = userfile.read_host_text(os.path.join(root, "proc/driver/nvidia/version"))
    return None if text is None else parse_proc_driver_version(text)


def parse_key_values(text: str) -> dict[str, str]:
    """`Key: value` lines, as /proc/driver/nvidia/params and gpus/*/information write them."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def read_proc_driver_params(root: str = "/") -> dict[str, str]:
    text = userfile.read_host_text(os.path.join(root, "proc/driver/nvidia/params"))
    return parse_key_values(text or "")


def read_gpu_firmware(root: str = "/") -> dict[str, str]:
    base = os.path.join(root, "proc/driver/nvidia/gpus")
    try:
        addresses = sorted(os.listdir(base))
    except OSError:
        return {}
    firmware = {}
    for address in addresses:
        text = userfile.read_host_text(os.path.join(base, address, "information"))
        if text is None:
            continue
        info = parse_key_values(text)
        if "GPU Firmware" in info:
            firmware[address] = info["GPU Firmware"]
    return firmware


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{(value % 1000) // 10}"


def collect_gpu(root: str = "/") -> GpuFacts:
    facts = GpuFacts(proc_driver=read_proc_driver_version(root))
    facts.params = read_proc_driver_params(root)
    facts.gpu_firmware = read_gpu_firmware(root)
    try:
        import pynvml
    except ImportError:
        facts.status = SourceStatus.ABSENT
        facts.error = "the nvidia-ml-py package (pynvml) is not installed"
        return facts

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        facts.status, facts.error = _classify_init_error(pynvml, exc, facts.proc_driver)
        facts.nvml_error = nvml_error_as_printed(pynvml, exc)
        return facts

    try:
        facts.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        facts.nvml_version = _text(pynvml.nvmlSystemGetNVMLVersion())
        cuda = _maybe(pynvml, lambda: pynvml.nvmlSystemGetCudaDriverVersion_v2())
        if isinstance(cuda, int):
            facts.cuda_driver_version = _cuda_version(cuda)
        for index in range(pynvml.nvmlDeviceGetCount()):
            facts.gpus.append(_device(pynvml, index))
    except pynvml.NVMLError as exc:
        facts.status = SourceStatus.UNREADABLE
        facts.error = f"NVML query failed: {exc}"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return facts


def nvml_error_as_printed(pynvml: Any, exc: Exception) -> str:
    """How go-nvml reports a failed nvmlInit: its own code when the library is missing, else NVML's string."""
    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        return "ERROR_LIBRARY_NOT_FOUND"
    return str(exc)


def _classify_init_error(
    pynvml: Any, exc: Exception, proc: ProcDriverVersion | None
) -> tuple[SourceStatus, str]:
    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        if proc is not None:
            return (
                SourceStatus.UNREADABLE,
                f"kernel module {proc.version} is loaded but libnvidia-ml.so.1 was not found",
            )
        return SourceStatus.ABSENT, "no NVIDIA driver: libnvidia-ml.so.1 not found and no kernel module loaded"
    if isinstance(exc, pynvml.NVMLError_DriverNotLoaded) or proc is None:
        # without the module NVML may also answer Unknown Error (no /dev/nvidiactl): the driver is still absent
        detail = "" if isinstance(exc, pynvml.NVMLError_DriverNotLoaded) else f" (NVML: {exc})"
        return (
            SourceStatus.ABSENT,
            "no NVIDIA driver loaded: the userspace library is installed but the kernel module is not" + detail,
        )
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return SourceStatus.UNREADABLE, "NVML: Insufficient Permissions (check /dev/nvidia* ownership and groups)"
    return SourceStatus.UNREADABLE, f"NVML initialisation failed: {exc}"


def _maybe(pynvml: Any, call: Callable[[], T]) -> T | None:
    """Query an optional property: unsupported or unavailable counts as unknown."""
    try:
        return call()
    except pynvml.NVMLError:
        return None


def _device(pynvml: Any, index: int) -> GpuDevice:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    device = GpuDevice(index=index)
    device.name = _text(pynvml.nvmlDeviceGetName(handle))
    device.uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
    pci = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetPciInfo(handle))
    if pci is not None:
        device.pci_bus_id = _text(pci.busId)
    device.minor_number = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetMinorNumber(handle))
    memory = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    if memory is not None:
        device.memory_total_bytes = int(memory.total)
        device.memory_used_bytes = int(memory.used)
    persistence = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetPersistenceMode(handle))
    if persistence is not None:
        device.persistence_mode = bool(persistence)
    ecc = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetEccMode(handle))
    if ecc is not None:
        device.ecc_enabled, device.ecc_pending = bool(ecc[0]), bool(ecc[1])
    rows = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetRemappedRows(handle))
    if rows is not None:
        device.remapped_rows_correctable = int(rows[0])
        device.remapped_rows_uncorrectable = int(rows[1])
        device.remapped_rows_pending = bool(rows[2])
        device.remapped_rows_failure = bool(rows[3])
    device.temperature_c = _maybe(
        pynvml, lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
    )
    capability = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    if capability is not None:
        device.compute_capability = f"{capability[0]}.{capability[1]}"
    mig = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetMigMode(handle))
    if mig is not None:
        device.mig_enabled, device.mig_pending = bool(mig[0]), bool(mig[1])
    pages = _maybe(pynvml, lambda: pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    if pages is not None:
        device.retired_pages_pending = bool(pages)
    fabric = _fabric_info(pynvml, handle)
    if fabric is not None:
        device.fabric_state = FABRIC_STATES.get(int(fabric.state), str(fabric.state))
        device.fabric_status = int(fabric.status)
    return device


def _fabric_info(pynvml: Any, handle: Any) -> Any:
    info_type = getattr(pynvml, "c_nvmlGpuFabricInfo_t", None)
    if info_type is None or not hasattr(pynvml, "nvmlDeviceGetGpuFabricInfo"):
        return None
    info = info_type()
    try:
        pynvml.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))
    except (pynvml.NVMLError, AttributeError, TypeError):
        return None
    return info
