"""`gpuhost models sync` with links planted in its directory: nothing outside DIR changes.

Each case plants a symbolic link (or a hard link, a FIFO) where the sync writes: NAME.part,
NAME.part.json, NAME, a folder, the lock file, the --record file; to a stand-in for /etc/passwd, to
a valid model file elsewhere, or to nothing. The sync runs as a subprocess with a deadline (a FIFO
must not hang it); the file in question fails by name (exit 1) or the run is refused (exit 2), the
other files are synced, and the tree outside DIR is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO
from tests.support.s3 import RangeServer, etag_of, model_bytes

FILES = {"checkpoints/a.safetensors": model_bytes(3 * 1024 * 1024 + 17, 1),
         "loras/b.safetensors": model_bytes(70_000, 2), "vae/c.safetensors": model_bytes(40_000, 3)}
TARGET = "checkpoints/a.safetensors"
PASSWD = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
DEADLINE_S = 60


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    source = tmp_path / "source"
    for key, data in FILES.items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    outside = tmp_path / "outside"
    (outside / "real-models" / "checkpoints").mkdir(parents=True)
    (outside / "passwd").write_bytes(PASSWD)
    (outside / "model-elsewhere.safetensors").write_bytes(FILES[TARGET])  # a valid copy outside DIR
    manifest = tmp_path / "models.manifest.json"
    manifest.write_text(json.dumps({"models": [
        {"path": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for key, data in FILES.items()]}))
    with RangeServer(source) as server:
        yield {"server": server, "source": source, "outside": outside, "models": tmp_path / "models",
               "manifest": manifest, "tmp": tmp_path}


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under root: its type, size, mtime, content hash, link target and extended attributes."""
    entries: dict[str, tuple[Any, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
            link = os.readlink(path) if path.is_symlink() else ""
            attributes = sorted(os.listxattr(path, follow_symlinks=False)) if not path.is_symlink() else []
            entries[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns,
                                                    digest, link, attributes)
    return entries


def sync(lab: dict[str, Any], *extra: str) -> tuple[int, dict[str, Any]]:
    command = [sys.executable, "-m", "gpuhost", "models", "sync", lab["server"].url, "--manifest",
               str(lab["manifest"]), "--to", str(lab["models"]), "--part-size", "1MiB", "--concurrency", "2",
               "--json", *extra]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def plant(path: Path, target: Path | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def state_for(lab: dict[str, Any], done: list[int]) -> str:
    """A NAME.part.json an earlier run would have left for TARGET (so a resume would open NAME.part)."""
    return json.dumps({"source": f"{lab['server'].url}/{TARGET}", "version": etag_of(os.stat(lab["source"] / TARGET)),
                       "size": len(FILES[TARGET]), "part_size": 1024 * 1024, "done": done})


def assert_others_synced(lab: dict[str, Any], answer: dict[str, Any]) -> None:
    actions = {f"{f['folder']}/{f['name']}": f["action"] for f in answer["files"]}
    for key, data in FILES.items():
        if key != TARGET:
            assert actions[key] == "fetched", answer["message"]
            assert (lab["models"] / key).read_bytes() == data


def failed_problem(answer: dict[str, Any]) -> str:
    [item] = [f for f in answer["files"] if f"{f['folder']}/{f['name']}" == TARGET]
    assert item["action"] == "failed", item
    return str(item["problem"])


PLANTS = {
    # name: (where below DIR, link target below the lab's tmp (None: dangling), words of the problem)
    "part-to-passwd": (f"{TARGET}.part", "outside/passwd", "is a symbolic link"),
    "part-dangling": (f"{TARGET}.part", "outside/nothing-here", "is a symbolic link"),
    "state-to-passwd": (f"{TARGET}.part.json", "outside/passwd", "is a symbolic link"),
    "final-to-passwd": (TARGET, "outside/passwd", "is a symbolic link"),
    "final-to-a-valid-model": (TARGET, "outside/model-elsewhere.safetensors", "is a symbolic link"),
    "final-dangling": (TARGET, "outside/nothing-here", "is a symbolic link"),
    "folder-to-a-directory": ("checkpoints", "outside/real-models/checkpoints", "is a symbolic link"),
    "folder-dangling": ("checkpoints", "outside/nowhere", "is a symbolic link"),
}


@pytest.mark.parametrize("case", sorted(PLANTS))
def test_a_planted_link_fails_its_file_by_name_and_changes_nothing_outside(lab: dict[str, Any], case: str) -> None:
    where, target, words = PLANTS[case]
    link = lab["models"] / where
    plant(link, lab["tmp"] / target)
    if case == "part-to-passwd":  # with a state that would make a run resume into the link
        (lab["models"] / f"{TARGET}.part.json").write_text(state_for(lab, [0, 1]))
    before = snapshot(lab["outside"])

    code, answer = sync(lab)

    assert code == 1, answer
    problem = failed_problem(answer)
    assert str(link) in problem and words in problem
    assert_others_synced(lab, answer)
    assert snapshot(lab["outside"]) == before
    assert link.is_symlink()  # left for the owner to look at, not followed, not removed


def test_a_dry_run_does_not_follow_a_planted_folder_either(lab: dict[str, Any]) -> None:
    plant(lab["models"] / "checkpoints", lab["outside"] / "real-models" / "checkpoints")
    (lab["outside"] / "real-models" / "checkpoints" / "a.safetensors.part").write_bytes(b"x" * 100)
    before = snapshot(lab["outside"])
    code, answer = sync(lab, "--dry-run")
    assert code == 1 and "is a symbolic link" in failed_problem(answer)
    assert snapshot(lab["outside"]) == before


def test_a_hard_linked_part_is_not_resumed_into(lab: dict[str, Any]) -> None:
    """O_NOFOLLOW does not see a hard link: a .part with a second name elsewhere is refused."""
    elsewhere = lab["outside"] / "passwd-copy"
    elsewhere.write_bytes(PASSWD + b"\0" * (len(FILES[TARGET]) - len(PASSWD)))
    part = lab["models"] / f"{TARGET}.part"
    part.parent.mkdir(parents=True)
    os.link(elsewhere, part)
    (lab["models"] / f"{TARGET}.part.json").write_text(state_for(lab, [0]))
    before = snapshot(lab["outside"])
    code, answer = sync(lab)
    assert code == 1
    problem = failed_problem(answer)
    assert str(part) in problem and "has 2 hard links" in problem
    assert_others_synced(lab, answer)
    assert snapshot(lab["outside"]) == before


def test_a_fifo_where_the_part_goes_is_refused_without_hanging(lab: dict[str, Any]) -> None:
    part = lab["models"] / f"{TARGET}.part"
    part.parent.mkdir(parents=True)
    os.mkfifo(part)
    code, answer = sync(lab)
    assert code == 1 and f"{part} is a FIFO, not a regular file" in failed_problem(answer)
    assert_others_synced(lab, answer)


def test_a_linked_lock_file_refuses_the_run(lab: dict[str, Any]) -> None:
    lock = lab["models"] / ".gpuhost-models-sync.lock"
    plant(lock, lab["outside"] / "passwd")
    before = snapshot(lab["outside"])
    code, answer = sync(lab)
    assert code == 2 and answer["exit_code"] == 2
    assert str(lock) in answer["error"] and "is a symbolic link" in answer["error"]
    assert snapshot(lab["outside"]) == before
    assert not (lab["models"] / TARGET).exists()  # refused before anything was fetched


@pytest.mark.parametrize("target", ["outside/passwd", "outside/nothing-here"])
def test_a_linked_record_file_refuses_the_run_before_anything_is_fetched(lab: dict[str, Any], target: str) -> None:
    record = lab["tmp"] / "etc" / "models.json"
    plant(record, lab["tmp"] / target)
    before = snapshot(lab["outside"])
    code, answer = sync(lab, "--record", str(record))
    assert code == 2 and f"--record {record} is a symbolic link" in answer["error"]
    assert snapshot(lab["outside"]) == before
    assert not lab["models"].exists()


def test_links_elsewhere_on_the_path_to_dir_itself_are_the_users_choice(lab: dict[str, Any]) -> None:
    """DIR is named by the user: a link to it (the instance store's mount) is followed; only below it
    are links refused."""
    real = lab["tmp"] / "instance-store" / "models"
    real.mkdir(parents=True)
    lab["models"].symlink_to(real)
    code, answer = sync(lab)
    assert code == 0, answer["message"]
    for key, data in FILES.items():
        assert (real / key).read_bytes() == data
