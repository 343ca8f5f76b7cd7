"""Host facts as distributions lay them out, each the way its own packages write it (see
tests/fixtures/README.md): the NVIDIA module as Debian's and Ubuntu's packages name and compress it,
GRUB pinning a kernel by menu title or by menu id, CDI specs naming GPUs by index, type-index or
UUID, and ComfyUI's permission errors on paths inside its mounted directories. Each layout is a tree
under tests/fixtures/hosts, read by the collectors and fed to the rules; scripts/capture-host-tree
writes the same tree back from it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuhost.comfyui.readiness import LogLine, Phase, ReadinessMachine, mounted_dir_of
from gpuhost.facts.boot import BootFacts, collect_boot, nvidia_modules
from gpuhost.facts.cdi import CdiSpec, collect_cdi, parse_spec
from gpuhost.hostfacts import HostFacts
from gpuhost.model import Finding, Severity
from gpuhost.rules import RuleOptions, evaluate
from tests.support.paths import FIXTURES, REPO
from tests.unit.test_rules_recorded import H100_SPEC, h100_gpu_facts, seed_facts

HOSTS = FIXTURES / "hosts"
UUID = "6a3c1f2e-0b7d-4e59-9c1a-2f8e4d7b5a10"
D12 = ("6.1.0-18-cloud-amd64", "6.1.0-20-cloud-amd64")


def found(facts: HostFacts, finding_id: str) -> list[Finding]:
    return [f for f in evaluate(facts, RuleOptions()) if f.id == finding_id]


@pytest.fixture
def h100(shared_dir: Path) -> HostFacts:
    facts = seed_facts()
    facts.gpu = h100_gpu_facts(shared_dir)
    facts.cdi.specs = [parse_spec("/var/run/cdi/nvidia.yaml", H100_SPEC.read_text())]
    return facts


def with_boot(facts: HostFacts, boot: BootFacts) -> HostFacts:
    facts.boot = boot
    return facts


# --- the kernel that boots next has the NVIDIA module ----------------------------------------------

LAYOUTS = {
    # tree: (running kernel, next kernel, where next was read, the core module under the next kernel)
    "debian12-nvidia-dkms": (D12[0], D12[1], "/vmlinuz", "updates/dkms/nvidia-current.ko"),
    "debian12-nvidia-open-grub-id": (D12[0], D12[0], "grubenv saved_entry", "updates/dkms/nvidia-current-open.ko"),
    "debian13-nvidia-dkms-xz": (
        "6.12.41+deb13-cloud-amd64", "6.12.48+deb13-cloud-amd64", "/vmlinuz", "updates/dkms/nvidia-current.ko.xz"
    ),
    "ubuntu2404-nvidia-lrm": ("6.8.0-1029-aws", "6.8.0-1031-aws", "/boot/vmlinuz", "kernel/nvidia-580srv/nvidia.ko"),
    "ubuntu2404-nvidia-dkms-zst": ("6.8.0-1029-aws", "6.8.0-1031-aws", "/boot/vmlinuz", "updates/dkms/nvidia.ko.zst"),
}


@pytest.mark.parametrize("tree", sorted(LAYOUTS))
def test_a_healthy_host_of_each_layout_passes_the_next_kernel_check(h100: HostFacts, tree: str) -> None:
    running, following, source, module = LAYOUTS[tree]
    boot = collect_boot(str(HOSTS / tree), running)
    assert (boot.next, boot.next_source) == (following, source)
    assert boot.next_nvidia_modules == [module]  # the core module, not its -modeset/-drm/-uvm/-peermem
    assert boot.next_unsigned_modules == []
    assert found(with_boot(h100, boot), "gpu.next-kernel") == []


@pytest.mark.parametrize("tree", sorted(LAYOUTS))
def test_the_same_host_without_the_module_for_its_next_kernel_fails(
    h100: HostFacts, tree: str, tmp_path: Path
) -> None:
    running, following, _, module = LAYOUTS[tree]
    copy = tmp_path / tree
    shutil.copytree(HOSTS / tree, copy, symlinks=True)
    running_boot = collect_boot(str(copy), running)
    (copy / "lib/modules" / following / module).unlink()
    boot = collect_boot(str(copy), running)
    assert boot.next_nvidia_modules == []
    if following == running:  # pinned to the running kernel: nothing changes at the next boot
        assert found(with_boot(h100, boot), "gpu.next-kernel") == []
        return
    [finding] = found(with_boot(h100, boot), "gpu.next-kernel")
    assert finding.severity is Severity.FAIL
    assert f"has no NVIDIA kernel module under /lib/modules/{following}" in finding.message
    assert running_boot.next_nvidia_modules == [module]


@pytest.mark.parametrize(
    ("name", "core"),
    [
        # NVIDIA's installer, Ubuntu's DKMS (nvidia-dkms-N[-open]) and prebuilt linux-modules-nvidia-N-*
        ("nvidia.ko", True), ("nvidia.ko.xz", True), ("nvidia.ko.zst", True), ("nvidia.ko.gz", True),
        # Debian's DKMS packages: dkms.conf DEST_MODULE_NAME[0]="$PACKAGE_NAME"
        ("nvidia-current.ko", True), ("nvidia-current.ko.xz", True), ("nvidia-current.ko.zst", True),
        ("nvidia-current.ko.gz", True), ("nvidia-current-open.ko", True), ("nvidia-current-open.ko.xz", True),
        ("nvidia-tesla.ko", True), ("nvidia-tesla-470.ko", True), ("nvidia-tesla-535.ko.xz", True),
        ("nvidia-legacy-390xx.ko", True),
        # the siblings and other modules named nvidia*
        ("nvidia-modeset.ko", False), ("nvidia-uvm.ko.zst", False), ("nvidia-drm.ko", False),
        ("nvidia-peermem.ko", False), ("nvidia-current-modeset.ko", False), ("nvidia-current-uvm.ko.xz", False),
        ("nvidia-current-open-drm.ko", False), ("nvidia-tesla-535-peermem.ko", False), ("nvidia-fs.ko", False),
        ("nvidiafb.ko", False), ("nvidia.ko.bak", False), ("nvidia.o", False),
    ],
)
def test_module_names_of_every_packaging(tmp_path: Path, name: str, core: bool) -> None:
    where = tmp_path / "lib/modules/6.1.0-20-amd64/updates/dkms"
    where.mkdir(parents=True)
    (where / name).write_bytes(b"\x7fELF" + b"~Module signature appended~\n")
    assert nvidia_modules(str(tmp_path), "6.1.0-20-amd64")[0] == ([f"updates/dkms/{name}"] if core else [])


@pytest.mark.parametrize(
    "directory",
    [
        "kernel/nvidia-580srv-open",  # linux-modules-nvidia-580-server-open-<kernel>
        "kernel/nvidia-580",  # linux-modules-nvidia-580-<kernel>
        "kernel/drivers/video",  # NVIDIA's .run installer
        "extra",  # a module built by hand (`make modules_install`)
    ],
)
def test_the_module_counts_wherever_the_packaging_puts_it(h100: HostFacts, tmp_path: Path, directory: str) -> None:
    copy = tmp_path / "host"
    shutil.copytree(HOSTS / "ubuntu2404-nvidia-lrm", copy, symlinks=True)
    modules = copy / "lib/modules/6.8.0-1031-aws"
    shutil.move(modules / "kernel/nvidia-580srv", tmp_path / "moved")
    (modules / directory).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp_path / "moved", modules / directory)
    boot = collect_boot(str(copy), "6.8.0-1029-aws")
    assert boot.next_nvidia_modules == [f"{directory}/nvidia.ko"]
    assert found(with_boot(h100, boot), "gpu.next-kernel") == []


def test_an_unsigned_module_of_debian_s_name_is_seen_under_secure_boot(h100: HostFacts, tmp_path: Path) -> None:
    copy = tmp_path / "host"
    shutil.copytree(HOSTS / "debian12-nvidia-dkms", copy, symlinks=True)
    module = copy / "lib/modules" / D12[1] / "updates/dkms/nvidia-current.ko"
    module.write_bytes(b"\x7fELF built without the DKMS signing key")
    (copy / "sys/firmware/efi/efivars").mkdir(parents=True)
    (copy / "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e098032b8c4b").write_bytes(b"\6\0\0\0\1")
    boot = collect_boot(str(copy), D12[0])
    assert boot.secure_boot and boot.next_unsigned_modules == ["updates/dkms/nvidia-current.ko"]
    [finding] = found(with_boot(h100, boot), "gpu.next-kernel")
    assert "only unsigned NVIDIA modules (updates/dkms/nvidia-current.ko)" in finding.message


# --- GRUB pins a kernel by menu title or by menu id -------------------------------------------------

PINNED = HOSTS / "debian12-nvidia-open-grub-id"


def grubenv(**values: str) -> str:
    text = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    return text + "#" * (1024 - len(text))


@pytest.mark.parametrize(
    ("env", "cfg_default", "expected"),
    [
        # saved_entry as grub-set-default / GRUB_SAVEDEFAULT write it, GRUB_DEFAULT=saved
        ({"saved_entry": f"gnulinux-advanced-{UUID}>gnulinux-{D12[0]}-advanced-{UUID}"}, None,
         (D12[0], "grubenv saved_entry")),
        ({"saved_entry": f"gnulinux-{D12[0]}-advanced-{UUID}"}, None, (D12[0], "grubenv saved_entry")),
        ({"saved_entry": f"gnulinux-{D12[0]}-recovery-{UUID}"}, None, (D12[0], "grubenv saved_entry")),
        ({"saved_entry": f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {D12[0]}"}, None,
         (D12[0], "grubenv saved_entry")),
        ({"saved_entry": f"Debian GNU/Linux, with Linux {D12[0]} (recovery mode)"}, None,
         (D12[0], "grubenv saved_entry")),
        ({"saved_entry": f"0f6e4d3c2b1a49588776655443322110-{D12[0]}"}, None, (D12[0], "grubenv saved_entry")),
        # entries that name no kernel: the first entry, the newest, boots
        ({"saved_entry": f"gnulinux-simple-{UUID}"}, None, (D12[1], "/vmlinuz")),
        ({"saved_entry": "1>2"}, None, (D12[1], "/vmlinuz")),
        ({"saved_entry": "gnulinux-5.10.0-28-amd64-advanced-x"}, None, (D12[1], "/vmlinuz")),
        # grub-reboot's one-time entry comes first
        ({"saved_entry": f"gnulinux-{D12[0]}-advanced-{UUID}", "next_entry": f"gnulinux-{D12[1]}-advanced-{UUID}"},
         None, (D12[1], "grubenv next_entry")),
        # GRUB_DEFAULT=0: grub.cfg ignores a saved_entry left behind
        ({"saved_entry": f"gnulinux-{D12[0]}-advanced-{UUID}"}, "0", (D12[1], "/vmlinuz")),
        # GRUB_DEFAULT=<id> in /etc/default/grub: grub.cfg names the entry itself
        ({}, f"gnulinux-advanced-{UUID}>gnulinux-{D12[0]}-advanced-{UUID}", (D12[0], "grub.cfg default")),
    ],
)
def test_grub_pins_the_kernel_by_title_or_by_id(
    h100: HostFacts, tmp_path: Path, env: dict[str, str], cfg_default: str | None, expected: tuple[str, str]
) -> None:
    copy = tmp_path / "host"
    shutil.copytree(PINNED, copy, symlinks=True)
    (copy / "boot/grub/grubenv").write_text(grubenv(**env))
    if cfg_default is not None:
        cfg = copy / "boot/grub/grub.cfg"
        cfg.write_text(cfg.read_text().replace('set default="${saved_entry}"', f'set default="{cfg_default}"'))
    boot = collect_boot(str(copy), D12[0])
    assert (boot.next, boot.next_source) == expected
    findings = found(with_boot(h100, boot), "gpu.next-kernel")
    # only the running kernel has the open module in this tree
    assert [f.severity for f in findings] == ([] if boot.next == D12[0] else [Severity.FAIL])


def test_a_saved_entry_counts_where_grub_cfg_cannot_be_read(tmp_path: Path) -> None:
    copy = tmp_path / "host"
    shutil.copytree(PINNED, copy, symlinks=True)
    (copy / "boot/grub/grub.cfg").unlink()
    assert collect_boot(str(copy), D12[0]).next_source == "grubenv saved_entry"


# --- CDI specs name GPUs by index, type-index or UUID -----------------------------------------------


@pytest.mark.parametrize(
    ("tree", "path", "devices"),
    [
        ("ubuntu2404-nvidia-lrm", "/var/run/cdi/nvidia.yaml", ["GPU-60779f43-f7f2-8149-8c59-933b6717452f", "all"]),
        ("ubuntu2404-nvidia-dkms-zst", "/etc/cdi/nvidia.yaml", ["gpu0", "all"]),
    ],
)
def test_a_spec_of_each_device_name_strategy_is_complete(
    h100: HostFacts, tree: str, path: str, devices: list[str]
) -> None:
    h100.cdi = collect_cdi(str(HOSTS / tree))
    [spec] = h100.cdi.specs
    assert (spec.path, spec.valid, spec.devices) == (path, True, devices)
    assert found(h100, "cdi.spec-incomplete") == []
    assert [f.severity for f in found(h100, "cdi.spec")] == [Severity.OK]
    # a second GPU that the spec does not name
    second = h100.gpu.gpus[0].__class__(index=1, uuid="GPU-0b1e2d3c-4a5f-6071-8293-a4b5c6d7e8f9")
    h100.gpu.gpus.append(second)
    [finding] = found(h100, "cdi.spec-incomplete")
    assert "1 GPU device(s) for the 2 NVML sees" in finding.message


def test_a_spec_by_uuid_for_other_gpus_names_none_of_these(h100: HostFacts) -> None:
    """A spec baked into an image on another instance: its UUIDs are not this host's GPUs."""
    h100.cdi = collect_cdi(str(HOSTS / "ubuntu2404-nvidia-lrm"))
    h100.gpu.gpus[0].uuid = "GPU-ffffffff-0000-1111-2222-333333333333"
    [finding] = found(h100, "cdi.spec-incomplete")
    assert "0 GPU device(s) for the 1 NVML sees" in finding.message


# --- ComfyUI's permission errors inside its mounted directories ------------------------------------


@pytest.mark.parametrize(
    ("path", "mounted"),
    [
        ("/basedir/user", "/basedir/user"),
        ("/basedir/user/default/comfy.settings.json", "/basedir/user"),
        ("/basedir/user/default", "/basedir/user"),
        ("/basedir/output/ComfyUI_00001_.png", "/basedir/output"),
        ("/basedir/output/2025-01-01/ComfyUI_00001_.png", "/basedir/output"),
        ("/basedir/input/pasted/image.png", "/basedir/input"),
        ("/basedir/temp/ComfyUI_temp_abcde_00001_.png", "/basedir/temp"),
        ("/basedir/models/checkpoints/sd15.safetensors", "/basedir/models"),
        ("/basedir/custom_nodes/ComfyUI-Manager/config.ini", "/basedir/custom_nodes"),
        ("/app/ComfyUI/user/default/comfy.settings.json", "/app/ComfyUI/user"),
        ("/opt/ComfyUI/output/ComfyUI_00001_.png", "/opt/ComfyUI/output"),
    ],
)
def test_a_permission_error_inside_a_mounted_directory_is_that_directory(path: str, mounted: str) -> None:
    assert mounted_dir_of(path) == mounted
    machine = ReadinessMachine(started_at=0.0)
    lines = [
        "Traceback (most recent call last):",
        '  File "/app/ComfyUI/main.py", line 330, in <module>',
        f"PermissionError: [Errno 13] Permission denied: '{path}'",
    ]
    for number, text in enumerate(lines):
        machine.feed(LogLine(float(number), text))
    verdict = machine.verdict
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, "dir-not-writable")
    assert f"cannot write {path}" in verdict.message
    assert (f"(inside {mounted}," in verdict.message) == (path != mounted)
    assert "chown the host directory" in verdict.remedy


@pytest.mark.parametrize(
    "path",
    [
        "/usr/local/lib/python3.12/site-packages/transformers/models/auto/__init__.py",
        "/usr/lib/python3/dist-packages/comfy/user/x",
        "/root/.cache/huggingface/hub",
        "/tmp/tmpabc",
    ],
)
def test_a_permission_error_elsewhere_is_not_a_mounted_directory(path: str) -> None:
    assert mounted_dir_of(path) == ""
    machine = ReadinessMachine(started_at=0.0)
    machine.feed(LogLine(1.0, f"PermissionError: [Errno 13] Permission denied: '{path}'"))
    assert machine.verdict.reason != "dir-not-writable"


# --- the capture script writes each layout back ------------------------------------------------------


@pytest.mark.parametrize("tree", sorted(LAYOUTS))
def test_capture_host_tree_captures_what_the_boot_and_cdi_collectors_read(tree: str, tmp_path: Path) -> None:
    out = tmp_path / "captured"
    subprocess.run(
        [str(REPO / "scripts/capture-host-tree"), str(out)],
        check=True, capture_output=True, env={**os.environ, "CAPTURE_ROOT": str(HOSTS / tree)},
    )
    running = LAYOUTS[tree][0]
    assert collect_boot(str(out), running) == collect_boot(str(HOSTS / tree), running)
    captured, source = collect_cdi(str(out)), collect_cdi(str(HOSTS / tree))
    def summary(specs: list[CdiSpec]) -> list[tuple[str, list[str], bool]]:
        return [(s.path, s.devices, s.valid) for s in specs]

    assert summary(captured.specs) == summary(source.specs)
    # kernel images are kept by name only, modules by their last 4 KiB
    assert all(p.stat().st_size == 0 for p in (out / "boot").glob("vmlinuz-*"))
