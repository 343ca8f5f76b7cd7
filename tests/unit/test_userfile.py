"""gpuhost.userfile: a file a user names is read only when it is a regular file, up to a cap, and
parsed only to a bounded depth. Every case runs in a child process with a deadline, so a regression
that blocks (a FIFO) or reads without end (/dev/zero) fails the test instead of hanging the suite."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuhost import userfile
from gpuhost.model import UsageError
from tests.support.paths import REPO

DEADLINE_S = 20

# the child: one call of the helper, its outcome as one JSON line
CHILD = """
import json, sys
from gpuhost import userfile
kind, path, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "json":
        value = userfile.load_json(path, "test file", cap)
    elif kind == "yaml":
        value = userfile.load_yaml(path, "test file", cap)
    else:
        value = userfile.read_text(path, "test file", cap)
    print(json.dumps({"ok": True, "value": repr(value)[:80]}))
except userfile.UserFileError as exc:
    print(json.dumps({"ok": False, "reason": exc.reason, "message": str(exc)}))
"""


def outcome(kind: str, path: Path | str, cap: int = 1024 * 1024) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), str(cap)], cwd=REPO, capture_output=True,
                          text=True, timeout=DEADLINE_S, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[dict[str, Path]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link-to-fifo"
    link.symlink_to(fifo)
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as fh:
        fh.truncate(1 << 40)  # 1 TiB of nothing: only the size tells
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        yield {"fifo": fifo, "link-to-fifo": link, "sparse": sparse, "socket": tmp_path / "sock",
               "directory": tmp_path, "zero": Path("/dev/zero")}
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["json", "yaml", "text"])
@pytest.mark.parametrize(("name", "reason", "words"), [
    ("fifo", "not-regular", "is a FIFO, not a regular file"),
    ("link-to-fifo", "not-regular", "is a FIFO, not a regular file"),
    ("socket", "not-regular", "is a socket, not a regular file"),
    ("directory", "not-regular", "is a directory, not a regular file"),
    ("zero", "not-regular", "is a character device, not a regular file"),
    ("sparse", "too-large", "is 1099511627776 bytes, more than the 1 MiB it may have"),
])
def test_special_files_are_refused_by_name_without_hanging(specials: dict[str, Path], kind: str, name: str,
                                                           reason: str, words: str) -> None:
    answer = outcome(kind, specials[name])
    assert answer["ok"] is False and answer["reason"] == reason
    assert answer["message"] == f"test file {specials[name]} {words}"


def test_a_missing_file_is_missing_not_special(tmp_path: Path) -> None:
    with pytest.raises(userfile.UserFileError, match="does not exist") as caught:
        userfile.read_text(str(tmp_path / "nothing"), "manifest", 100)
    assert caught.value.missing and isinstance(caught.value, UsageError)


def test_a_file_that_says_size_zero_is_read_up_to_the_cap_only() -> None:
    # /proc files report size 0: only the cap bounds what is read
    assert "Linux" in userfile.read_text("/proc/version", "version file", userfile.PROC_MAX)
    with pytest.raises(userfile.UserFileError, match="goes on, more than the 16 bytes it may have"):
        userfile.read_text("/proc/self/status", "status file", 16)
    assert userfile.read_host_text("/proc/self/status", 16) is None


@pytest.mark.parametrize(("kind", "document"), [
    ("json", "[" * 200_000 + "]" * 200_000),  # past the recursion limit
    ("json", "[" * 101 + "]" * 101),  # within it, past the depth cap
    ("json", '{"a":' * 150 + "1" + "}" * 150),
    ("yaml", "[" * 200_000 + "]" * 200_000),
    ("yaml", "- " * 5_000 + "x\n"),  # block style: nesting without brackets
    ("yaml", "".join(f"{'  ' * i}k{i}:\n" for i in range(150)) + "  " * 150 + "v\n"),
])
def test_deep_nesting_is_one_usage_error(tmp_path: Path, kind: str, document: str) -> None:
    path = tmp_path / f"deep.{kind}"
    path.write_text(document)
    answer = outcome(kind, path, 16 * 1024 * 1024)
    assert answer["reason"] == "too-deep", answer
    assert answer["message"] == f"test file {path} nests deeper than 100 levels"


def test_nesting_up_to_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text("[" * 100 + "]" * 100)
    assert userfile.nesting_depth(userfile.load_json(str(path), "f", 1000)) == 100


@pytest.mark.parametrize("kind", ["json", "yaml", "text"])
def test_invalid_utf8_is_named_with_its_offset(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "latin1"
    path.write_bytes(b'{"a": "caf\xe9"}')
    answer = outcome(kind, path)
    assert answer["reason"] == "not-text"
    assert "is not UTF-8 text" in str(answer["message"]) and str(path) in str(answer["message"])


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "[1e400]", '{"a": -Infinity}'])
def test_json_is_strict(text: str) -> None:
    with pytest.raises(userfile.UserFileError, match="is not valid JSON"):
        userfile.parse_json(text, "doc")


def test_a_symlink_is_refused_where_links_are_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(userfile.UserFileError, match="is a symbolic link, not a regular file"):
        userfile.read_text(str(tmp_path / "link"), "state", 100, follow_symlinks=False)
    assert userfile.read_text(str(tmp_path / "link"), "state", 100) == "root:x:0:0\n"


def test_check_regular_refuses_before_another_library_reads(specials: dict[str, Path], tmp_path: Path) -> None:
    for name in ("fifo", "zero", "directory", "socket"):
        with pytest.raises(userfile.UserFileError, match="not a regular file"):
            userfile.check_regular(str(specials[name]), "CA bundle", 1024)
    with pytest.raises(userfile.UserFileError, match="more than the 1 KiB"):
        userfile.check_regular(str(specials["sparse"]), "CA bundle", 1024)
    small = tmp_path / "ca.pem"
    small.write_text("x")
    userfile.check_regular(str(small), "CA bundle", 1024)


def test_the_helper_imports_on_python_3_9_without_third_party_packages(tmp_path: Path) -> None:
    """The agent's hosts run python3 >= 3.9 with no PyYAML: the helper must import and work there."""
    python39 = next((p for p in ("/usr/bin/python3.9", os.path.expanduser("~/.pyenv/versions/3.9.18/bin/python3.9"))
                     if os.path.exists(p)), None)
    if python39 is None:
        pytest.skip("no python3.9 on this machine")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.modules['yaml'] = None\n"
            "from gpuhost import userfile\n"
            f"try: userfile.load_json({str(fifo)!r}, 'manifest', 100)\n"
            "except userfile.UserFileError as e: print(e)\n")
    proc = subprocess.run([python39, "-I", "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=DEADLINE_S, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"manifest {fifo} is a FIFO, not a regular file"
