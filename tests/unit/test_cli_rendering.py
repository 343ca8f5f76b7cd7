"""Every renderer of the CLI, fed hostile text where untrusted text goes (log lines, server answers,
Docker and registry messages, file and node names, host names): no raw control byte reaches the
terminal, rich markup in the text is shown as text (never read, never a crash), and no URL keeps its
credentials."""

from __future__ import annotations

import io
from typing import Any

import pytest
import typer
from rich.console import Console

from gpuhost.check import CheckReport
from gpuhost.cli import check as check_cli
from gpuhost.cli import comfyui as comfyui_cli
from gpuhost.cli import models as models_cli
from gpuhost.cli.common import fail
from gpuhost.comfyui.layers import Layer, LayersReport
from gpuhost.comfyui.models.report import FileResult, ModelsResult
from gpuhost.comfyui.readiness import NodeWarning, Phase, Verdict
from gpuhost.comfyui.wait import WaitResult
from gpuhost.comfyui.workflow import Problem, WorkflowReport
from gpuhost.facts.cdi import CdiSpec
from gpuhost.fleet.report import FleetReport, HostResult
from gpuhost.hostfacts import HostFacts
from gpuhost.model import ExitCode, Finding, Severity

CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\x08", "\x00", "\u202e")
EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m\rover\x08\x00\u202e [/bold] [link=file:///etc/passwd]x[/link] http://u:Pw0rd@h/"


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, soft_wrap=True), buffer


def assert_safe(text: str) -> None:
    for control in CONTROLS:
        assert control not in text, repr(control)
    assert "Pw0rd" not in text
    assert "[/bold]" in text and "[link=file:///etc/passwd]" in text  # markup shown as text
    assert "\\x1b" in text


def test_check_table() -> None:
    facts = HostFacts(hostname=f"host{EVIL}")
    facts.cdi.specs = [CdiSpec(path=f"/etc/cdi/{EVIL}.yaml")]
    finding = Finding("comfyui.ready", f"comfyui{EVIL}", Severity.FAIL, f"last line: {EVIL}", f"do {EVIL}")
    report = CheckReport(host=f"host{EVIL}", verdict=Severity.FAIL, exit_code=ExitCode.FAILING, findings=[finding],
                         facts=facts)
    out, buffer = console()
    check_cli.print_check(report, out)
    assert_safe(buffer.getvalue())


def test_fleet_table() -> None:
    failure = Finding("fleet.agent-failed", "fleet", Severity.FAIL, f"the agent failed: {EVIL}", f"run {EVIL}")
    report = FleetReport(hosts=[HostResult(name=f"gpu{EVIL}", address=f"fleet@{EVIL}", failure=failure)])
    out, buffer = console()
    check_cli.print_fleet(report, out)
    assert_safe(buffer.getvalue())


def test_workflow_report() -> None:
    problem = Problem(node_id=f"3{EVIL}", class_type=f"Loader{EVIL}", type="value_not_in_list",
                      message=f"m{EVIL}", details=f"d{EVIL}")
    report = WorkflowReport(path=f"wf{EVIL}.json", server="http://u:Pw0rd@127.0.0.1:8188", nodes=1, outputs=[],
                            problems=[problem], comfyui_status=400, comfyui_response={"error": EVIL})
    out, buffer = console()
    check_cli.print_workflow(report, out)
    assert_safe(buffer.getvalue())


def verdict(phase: Phase) -> Verdict:
    return Verdict(phase=phase, reason="crashed", message=f"ComfyUI stopped: {EVIL}", remedy=f"fix {EVIL}",
                   failing_line=EVIL, last_line=EVIL, tail=[EVIL, f"second {EVIL}"], notes=[f"note {EVIL}"],
                   warnings=[NodeWarning(kind="custom-node", node=f"node{EVIL}", reason=f"why{EVIL}")])


@pytest.mark.parametrize("phase", [Phase.FAILED, Phase.READY])
def test_wait_ready_result(phase: Phase) -> None:
    result = WaitResult(container=f"c{EVIL}", container_id="0" * 64, image=f"i{EVIL}", verdict=verdict(phase),
                        elapsed_s=1.0)
    out, buffer = console()
    comfyui_cli.print_wait(result, out)
    assert_safe(buffer.getvalue())


def test_wait_ready_status_line() -> None:
    from gpuhost.comfyui.wait import Progress

    progress = comfyui_cli.WaitProgress(f"c{EVIL}")
    shown: list[Any] = []

    class Status:
        def update(self, text: Any) -> None:
            shown.append(text)

    progress._status = Status()
    progress.update(Progress(Phase.STARTING, 1.0, 3, EVIL, f"HTTP 500 {EVIL}"))
    out, buffer = console()
    out.print(shown[0])
    text = buffer.getvalue()
    for control in CONTROLS:
        assert control not in text


def test_layers_report() -> None:
    layer = Layer(index=1, id="sha256:0", created_by=EVIL, instruction="RUN", command=f"curl {EVIL}", size=0,
                  model_step=True, model_why=f"why{EVIL}", severity=Severity.FAIL, problem=f"0 B {EVIL}")
    report = LayersReport(image=f"img{EVIL}", image_id="sha256:" + "0" * 64, layers=[layer], min_model_bytes=1,
                          total_bytes=0, model_bytes=0, registry_error=f"registry said {EVIL}")
    out, buffer = console()
    comfyui_cli.print_layers(report, out)
    assert_safe(buffer.getvalue())


def test_models_table(monkeypatch: pytest.MonkeyPatch) -> None:
    out, buffer = console()
    monkeypatch.setattr("rich.console.Console", lambda *a, **k: out)
    result = ModelsResult(command="sync", directory=f"/m{EVIL}", manifest="m.yaml",
                          source="https://u:Pw0rd@h/models", ignored=[f"glob{EVIL}"],
                          files=[FileResult(folder=f"f{EVIL}", name=f"n{EVIL}", path="/p", size=1, action="failed",
                                            problem=f"HTTP 500 from https://u:Pw0rd@h/x {EVIL}")])
    models_cli.print_result(result)
    assert_safe(buffer.getvalue())


def test_errors_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    for as_json in (False, True):
        with pytest.raises(typer.Exit):
            fail(ExitCode.SOURCE_UNREADABLE, f"Docker said: {EVIL}", f"hint {EVIL}", as_json)
        captured = capsys.readouterr()
        text = captured.out + captured.err
        for control in CONTROLS:
            assert control not in text
        assert "Pw0rd" not in text


def test_storage_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuhost.cli import storage as storage_cli
    from gpuhost.storage.plan import DiskInspection, Refusal, StoragePlan, StorageRequest

    out, buffer = console()
    monkeypatch.setattr("rich.console.Console", lambda *a, **k: out)
    disk = DiskInspection(path="/dev/nvme1n1", name="nvme1n1", model=f"Amazon{EVIL}", serial=f"AWS{EVIL}",
                          refusals=[Refusal("signature", f"/dev/nvme1n1: holds {EVIL}", True)])
    plan = StoragePlan(request=StorageRequest(), selection="devices", disks=[disk], errors=[f"refused {EVIL}"],
                       actions=[f"mkfs {EVIL}"])
    storage_cli.print_plan(plan)
    assert_safe(buffer.getvalue())
