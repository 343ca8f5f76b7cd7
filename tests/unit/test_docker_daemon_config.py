"""The daemon.json single-writer module, run as Ansible runs it (a subprocess with an args file)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

MODULE = REPO / "library" / "docker_daemon_config.py"


def run_module(
    tmp_path: Path,
    check: bool = False,
    diff: bool = False,
    timeout: float = 60,
    prefix: tuple[str, ...] = (),
    **args: Any,
) -> dict[str, Any]:
    args_file = tmp_path / "args.json"
    module_args = dict(args)
    module_args["_ansible_check_mode"] = check
    module_args["_ansible_diff"] = diff
    module_args["_ansible_tmpdir"] = str(tmp_path)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    command = [*prefix, sys.executable, str(MODULE), str(args_file)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    result: dict[str, Any] = json.loads(proc.stdout)
    result["_rc"] = proc.returncode
    return result


@pytest.fixture
def daemon_json(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "docker" / "daemon.json"
    path.parent.mkdir(parents=True)
    return path


def test_creates_missing_file(tmp_path: Path, daemon_json: Path) -> None:
    result = run_module(tmp_path, path=str(daemon_json), settings={"live-restore": True})
    assert result["changed"] is True
    assert json.loads(daemon_json.read_text()) == {"live-restore": True}
    assert oct(daemon_json.stat().st_mode & 0o777) == "0o644"
    assert "backup_file" not in result


def test_keeps_user_keys_and_merges_nested_objects(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text(
        json.dumps(
            {
                "registry-mirrors": ["https://mirror.example"],
                "features": {"buildkit": True},
                "runtimes": {"crun": {"path": "/usr/bin/crun"}},
                "log-opts": {"max-size": "10m", "labels": "team"},
            }
        )
    )
    result = run_module(
        tmp_path,
        path=str(daemon_json),
        settings={
            "features": {"cdi": True},
            "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "args": []}},
            "log-opts": {"max-size": "100m"},
        },
    )
    written = json.loads(daemon_json.read_text())
    assert written == {
        "registry-mirrors": ["https://mirror.example"],
        "features": {"buildkit": True, "cdi": True},
        "runtimes": {
            "crun": {"path": "/usr/bin/crun"},
            "nvidia": {"path": "/usr/bin/nvidia-container-runtime", "args": []},
        },
        "log-opts": {"max-size": "100m", "labels": "team"},
    }
    assert sorted(result["changed_keys"]) == ["features.cdi", "log-opts.max-size", "runtimes.nvidia"]


def test_second_run_is_unchanged_and_keeps_formatting(tmp_path: Path, daemon_json: Path) -> None:
    original = '{"features": {"cdi": true},   "debug": false}\n'
    daemon_json.write_text(original)
    result = run_module(tmp_path, path=str(daemon_json), settings={"features": {"cdi": True}})
    assert result["changed"] is False
    assert result["changed_keys"] == []
    assert daemon_json.read_text() == original
    assert not list(daemon_json.parent.glob("daemon.json.*"))


def test_null_removes_a_key(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text(json.dumps({"default-runtime": "nvidia", "features": {"cdi": True, "buildkit": True}}))
    result = run_module(
        tmp_path, path=str(daemon_json), settings={"default-runtime": None, "features": {"buildkit": None}}
    )
    assert result["changed"] is True
    assert json.loads(daemon_json.read_text()) == {"features": {"cdi": True}}
    again = run_module(tmp_path, path=str(daemon_json), settings={"default-runtime": None})
    assert again["changed"] is False


def test_invalid_json_fails_and_leaves_the_file_untouched(tmp_path: Path, daemon_json: Path) -> None:
    broken = '{"log-driver": "json-file",\n  "features": {"buildkit": true,}\n'
    daemon_json.write_text(broken)
    before = daemon_json.stat()
    result = run_module(tmp_path, path=str(daemon_json), settings={"features": {"cdi": True}})
    assert result.get("failed") is True
    assert result["_rc"] != 0
    assert str(daemon_json) in result["msg"]
    assert "not valid JSON" in result["msg"]
    assert result["parse_error"]
    assert daemon_json.read_text() == broken
    assert daemon_json.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in daemon_json.parent.iterdir()) == ["daemon.json"]


def test_non_object_json_is_refused(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text("[1, 2]\n")
    result = run_module(tmp_path, path=str(daemon_json), settings={"debug": True})
    assert result.get("failed") is True
    assert "not an object" in result["msg"]
    assert daemon_json.read_text() == "[1, 2]\n"


def test_check_mode_reports_the_change_and_the_diff_without_writing(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text('{"debug": true}\n')
    result = run_module(tmp_path, check=True, diff=True, path=str(daemon_json), settings={"live-restore": True})
    assert result["changed"] is True
    assert daemon_json.read_text() == '{"debug": true}\n'
    assert result["diff"]["before"] == '{"debug": true}\n'
    assert json.loads(result["diff"]["after"]) == {"debug": True, "live-restore": True}


def test_backup_and_preserved_permissions(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text('{"debug": true}\n')
    os.chmod(daemon_json, 0o600)
    result = run_module(tmp_path, path=str(daemon_json), settings={"debug": False})
    backup = Path(result["backup_file"])
    assert backup.read_text() == '{"debug": true}\n'
    assert backup.parent == daemon_json.parent
    assert oct(daemon_json.stat().st_mode & 0o777) == "0o600"
    assert json.loads(daemon_json.read_text()) == {"debug": False}
    leftovers = [p for p in daemon_json.parent.iterdir() if p.name.startswith(".daemon.json.")]
    assert leftovers == []


def test_type_change_counts_as_a_change(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text('{"max-concurrent-downloads": "3"}\n')
    result = run_module(tmp_path, path=str(daemon_json), settings={"max-concurrent-downloads": 3})
    assert result["changed"] is True
    assert json.loads(daemon_json.read_text()) == {"max-concurrent-downloads": 3}


def refused_and_untouched(result: dict[str, Any], directory: Path, before: dict[str, bytes]) -> str:
    """The module failed with a message, and the directory holds exactly what it held before."""
    assert result.get("failed") is True and result["_rc"] != 0, result
    assert "Traceback" not in result["msg"] and "invalid literal" not in result["msg"]
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == before
    return str(result["msg"])


def test_a_symlinked_file_is_followed_and_its_target_rewritten(tmp_path: Path, daemon_json: Path) -> None:
    real = tmp_path / "config" / "docker-daemon.json"
    real.parent.mkdir()
    real.write_text('{"debug": true}\n')
    os.chmod(real, 0o640)
    daemon_json.symlink_to(real)
    result = run_module(tmp_path, path=str(daemon_json), settings={"live-restore": True})
    assert result["changed"] is True
    assert daemon_json.is_symlink() and os.readlink(daemon_json) == str(real)
    assert json.loads(real.read_text()) == {"debug": True, "live-restore": True}
    assert oct(real.stat().st_mode & 0o777) == "0o640"
    assert Path(result["backup_file"]).parent == real.parent
    assert sorted(p.name for p in daemon_json.parent.iterdir()) == ["daemon.json"]
    assert run_module(tmp_path, path=str(daemon_json), settings={"live-restore": True})["changed"] is False


@pytest.mark.parametrize(
    ("existing", "settings"),
    [
        ('{"debug": true}\n', {"x": float("nan")}),
        ('{"debug": true}\n', {"log-opts": {"max-size": float("inf")}}),
        ('{"debug": true}\n', {"list": [1, float("-inf")]}),
        ('{"max-concurrent-downloads": 1e400}\n', {"debug": True}),
        ('{"debug": NaN}\n', {"live-restore": True}),
        ('{"a": {"b": -Infinity}}\n', {"live-restore": True}),
    ],
)
def test_non_finite_numbers_are_refused(
    tmp_path: Path, daemon_json: Path, existing: str, settings: dict[str, Any]
) -> None:
    daemon_json.write_text(existing)
    result = run_module(tmp_path, path=str(daemon_json), settings=settings)
    message = refused_and_untouched(result, daemon_json.parent, {"daemon.json": existing.encode()})
    assert "finite" in message


def test_setuid_and_setgid_bits_are_kept(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text('{"debug": true}\n')
    os.chmod(daemon_json, 0o6755)
    run_module(tmp_path, path=str(daemon_json), settings={"debug": False})
    assert json.loads(daemon_json.read_text()) == {"debug": False}
    assert oct(stat.S_IMODE(daemon_json.stat().st_mode)) == "0o6755"


def test_a_symbolic_mode_for_a_new_file(tmp_path: Path, daemon_json: Path) -> None:
    result = run_module(tmp_path, path=str(daemon_json), settings={"debug": True}, mode="u=rw,g=r,o=")
    assert result["changed"] is True, result
    assert oct(stat.S_IMODE(daemon_json.stat().st_mode)) == "0o640"
    assert sorted(p.name for p in daemon_json.parent.iterdir()) == ["daemon.json"]


@pytest.mark.parametrize("mode", ["rw-r--r--", "0999", "017777", "u=rwz", "-1", " 0644", True])
def test_a_mode_it_cannot_read_is_refused_before_anything_is_written(
    tmp_path: Path, daemon_json: Path, mode: Any
) -> None:
    result = run_module(tmp_path, path=str(daemon_json), settings={"debug": True}, mode=mode)
    message = refused_and_untouched(result, daemon_json.parent, {})
    assert "mode" in message


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, daemon_json: Path) -> None:
    os.mkfifo(daemon_json)
    result = run_module(tmp_path, path=str(daemon_json), settings={"debug": True}, timeout=20)
    assert result.get("failed") is True
    assert "is a FIFO, not a regular file" in result["msg"]
    assert stat.S_ISFIFO(daemon_json.lstat().st_mode)


def test_a_read_only_directory_is_a_clear_refusal(tmp_path: Path, daemon_json: Path) -> None:
    daemon_json.write_text('{"debug": true}\n')
    os.chmod(daemon_json.parent, 0o555)
    # root writes anywhere: run the module without the capability that lets it
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
    if prefix and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a mode-0555 directory does not stop root")
    try:
        result = run_module(tmp_path, path=str(daemon_json), settings={"debug": False}, prefix=prefix)
    finally:
        os.chmod(daemon_json.parent, 0o755)
    message = refused_and_untouched(result, daemon_json.parent, {"daemon.json": b'{"debug": true}\n'})
    assert str(daemon_json.parent) in message and "Permission denied" in message
    assert "[Errno" not in message


@pytest.mark.parametrize(
    "existing",
    [
        b'{"debug": true, "debug": false}\n',  # which one dockerd reads is not ours to guess
        b'{"labels": ["caf\xe9"]}\n',  # Latin-1, not UTF-8
        b"[" * 5000 + b"]" * 5000,
        b'{"a": ' * 2000 + b"1" + b"}" * 2000,
    ],
)
def test_files_it_cannot_rewrite_faithfully_are_refused(tmp_path: Path, daemon_json: Path, existing: bytes) -> None:
    daemon_json.write_bytes(existing)
    result = run_module(tmp_path, path=str(daemon_json), settings={"live-restore": True})
    refused_and_untouched(result, daemon_json.parent, {"daemon.json": existing})
