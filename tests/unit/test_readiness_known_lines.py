"""Every row of readiness's line tables, fed its own example: a known line decides the start (or warns)
as its row says, a harmless line is only noted. A row's example is its test: adding a row adds it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuhost.comfyui import readiness
from gpuhost.comfyui.readiness import (
    HARMLESS,
    KNOWN_LINES,
    HarmlessLine,
    KnownLine,
    LogLine,
    Phase,
    ProbeResult,
    ReadinessMachine,
)
from tests.support.comfyui_replay import capture_file
from tests.support.paths import REPO

GUI = "To see the GUI go to: http://0.0.0.0:8188"
URL = "http://127.0.0.1:8188/system_stats"
UNFILLED = re.compile(r"\{\w+\}")


def fed(*lines: str) -> ReadinessMachine:
    machine = ReadinessMachine(stall_timeout=60.0, started_at=0.0, host_network=True)
    for at, line in enumerate(lines):
        machine.feed(LogLine(float(at), line))
    return machine


def serve(machine: ReadinessMachine) -> None:
    machine.feed(LogLine(100.0, GUI))
    machine.feed(ProbeResult(100.5, URL, 200))


def row_id(row: KnownLine | HarmlessLine) -> str:
    return row.reason if isinstance(row, KnownLine) else row.note


@pytest.mark.parametrize("row", [r for r in KNOWN_LINES if r.phase is Phase.FAILED], ids=row_id)
def test_a_known_failure_line_decides_the_start_as_its_row_says(row: KnownLine) -> None:
    verdict = fed(*row.context, row.example).verdict
    assert (verdict.phase, verdict.reason) == (Phase.FAILED, row.reason)
    assert verdict.failing_line == row.example
    assert verdict.message and not UNFILLED.search(verdict.message), verdict.message
    assert verdict.remedy and not UNFILLED.search(verdict.remedy), verdict.remedy


@pytest.mark.parametrize("row", [r for r in KNOWN_LINES if r.phase is Phase.STARTING], ids=row_id)
def test_a_known_warning_line_names_its_cause_and_the_start_goes_on(row: KnownLine) -> None:
    machine = fed(*row.context, row.example)
    assert machine.verdict.phase is Phase.STARTING
    [warning] = machine.verdict.warnings
    assert (warning.kind, warning.line) == (row.reason, row.example)
    for text in (warning.node, warning.reason, warning.remedy):
        assert text and not UNFILLED.search(text), text
    serve(machine)
    assert machine.verdict.phase is Phase.READY
    assert machine.verdict.warnings == [warning]


@pytest.mark.parametrize("row", HARMLESS, ids=row_id)
def test_a_harmless_line_is_noted_and_the_start_goes_on(row: HarmlessLine) -> None:
    machine = fed(row.example)
    assert machine.verdict.phase is Phase.STARTING
    assert machine.verdict.notes == [row.note]
    assert machine.verdict.warnings == []
    serve(machine)
    assert machine.verdict.phase is Phase.READY


@pytest.mark.parametrize(
    "row", [r for r in (*KNOWN_LINES, *HARMLESS) if r.source.startswith("capture:")], ids=row_id
)
def test_a_row_from_a_capture_quotes_a_line_of_it(shared_dir: Path, row: KnownLine | HarmlessLine) -> None:
    capture = capture_file(row.source.removeprefix("capture:"), shared_dir)
    assert row.example in capture.read_text().splitlines()


@pytest.mark.parametrize(
    "lines",
    [
        # ComfyUI-Manager ran no pip: nothing waits for a restart
        ["After restarting ComfyUI, please refresh the browser."],
        # a Python package's own files are no directory of ComfyUI's data
        ["PermissionError: [Errno 13] Permission denied: '/usr/lib/python3/dist-packages/models/x.py'"],
    ],
    ids=["restart-without-pip", "denied-outside-the-data"],
)
def test_a_row_stands_aside_without_what_it_needs(lines: list[str]) -> None:
    verdict = fed(*lines).verdict
    assert verdict.phase is Phase.STARTING
    assert verdict.warnings == []


def verdict_reasons() -> set[str]:
    """Every reason the machine can give: its table's and those its code decides."""
    source = Path(readiness.__file__).read_text()
    decided = re.findall(r'_decide\(\s*Phase\.\w+,\s*"([a-z-]+)"', source)
    assigned = re.findall(r'\breason = "([a-z-]+)"', source)
    return {*decided, *assigned, *(r.reason for r in KNOWN_LINES if r.phase is Phase.FAILED)}


def test_every_verdict_reason_and_warning_kind_is_in_the_docs() -> None:
    page = (REPO / "docs" / "wait-ready.md").read_text()
    reasons = verdict_reasons()
    assert {"missing-module", "port-in-use", "stalled", "timeout", "driver-too-old"} <= reasons
    kinds = {r.reason for r in KNOWN_LINES if r.phase is Phase.STARTING}
    missing = sorted(name for name in reasons | kinds if f"`{name}`" not in page)
    assert missing == [], f"docs/wait-ready.md does not name {missing}"
