"""The daemon.json single-writer module, run as Ansible runs it (a subprocess with an args file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

MODULE = REPO / "library" / "docker_daemon_config.py"


def run_module(tmp_path: Path, check: bool = False, diff: bool = False, **args: Any) -> dict[str, Any]:
    args_file = tmp_path / "args.json"
    module_args = dict(args)
    module_args["_ansible_check_mode"] = check
    module_args["_ansible_diff"] = diff
    module_args["_ansible_tmpdir"] = str(tmp_path)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, timeout=60, check=False
    )
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
