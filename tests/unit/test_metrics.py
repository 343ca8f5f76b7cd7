"""`gpuhost check --format prometheus` and its agent equivalent: the exposition format (escaping, names,
one series per label set), the metrics of planted hosts checked by the distribution's `promtool check
metrics`, what never becomes a label, and the textfile the metrics timer writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gpuhost.agent import main as agent_main
from gpuhost.check import add_findings, report_for
from gpuhost.comfyui.facts import ComfyUIContainerFacts
from gpuhost.comfyui.readiness import Phase, Verdict
from gpuhost.exposition import Family, escape_label_value, render
from gpuhost.hostfacts import CollectOptions, HostFacts, collect_host_facts
from gpuhost.metrics.report import render_report
from gpuhost.metrics.textfile import CHECK_FILE, RUN_FILE
from gpuhost.model import Finding, Severity
from gpuhost.rules import RuleOptions
from gpuhost.serde import from_jsonable
from tests.support.paths import FIXTURES
from tests.support.prometheus import promtool

HOSTS = sorted(p for p in (FIXTURES / "hosts").iterdir() if p.is_dir())
NO_DOCKER = "unix:///nonexistent/gpuhost-metrics-test.sock"
HOSTILE = 'a\\b"c\nd}\t{e="f"\u202e\x1b[31m'


def seed_facts() -> HostFacts:
    return from_jsonable(HostFacts, json.loads((FIXTURES / "facts" / "seed-al2023-exposed.json").read_text()))


def planted(tree: Path) -> HostFacts:
    return collect_host_facts(CollectOptions(root=str(tree), dev_root=str(tree / "dev"), docker_host=NO_DOCKER))


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


def assert_promtool_clean(text: str) -> None:
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def comfyui(name: str, phase: Phase, queue: int | None = None) -> ComfyUIContainerFacts:
    return ComfyUIContainerFacts(id="0" * 12, name=name, image="comfyui", state="running",
                                 verdict=Verdict(phase=phase), queue_remaining=queue)


# --- the exposition format ---------------------------------------------------------------------


def test_label_values_escape_backslash_quote_and_newline() -> None:
    assert escape_label_value('C:\\dir "x"\nnext') == 'C:\\\\dir \\"x\\"\\nnext'
    text = render([Family("t_info", "gauge", "help with \\ and\nnewline").add(1, {"v": 'a\\b"c\nd'})])
    assert text == (
        "# HELP t_info help with \\\\ and\\nnewline\n"
        "# TYPE t_info gauge\n"
        't_info{v="a\\\\b\\"c\\nd"} 1\n'
    )
    assert_promtool_clean(text)


def test_text_that_is_not_utf8_is_replaced_not_passed_on() -> None:
    undecodable = b"models-\xff\xfe".decode("utf-8", errors="surrogateescape")
    text = render([Family("t_info", "gauge", "h").add(1, {"path": undecodable})])
    assert 't_info{path="models-\ufffd\ufffd"} 1' in text
    text.encode("utf-8")


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: Family("1bad", "gauge", "h"), "not a Prometheus metric name"),
        (lambda: Family("t", "histogram", "h"), "type"),
        (lambda: Family("t", "gauge", "h").add(1, {"bad-label": "x"}), "not a label name"),
        (lambda: Family("t", "gauge", "h").add(1, {"__reserved": "x"}), "not a label name"),
        (lambda: Family("t", "gauge", "h").add(float("nan")), "finite"),
        (lambda: Family("t", "gauge", "h").add(float("inf")), "finite"),
        (lambda: Family("t", "gauge", "h").add(True), "number"),
        (lambda: render([Family("t", "gauge", "h").add(1, {"a": "x"}).add(2, {"a": "x"})]), "twice"),
        (lambda: render([Family("t", "gauge", "h"), Family("t", "gauge", "h")]), "twice"),
    ],
)
def test_what_a_scrape_would_reject_is_refused_here(build: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        build()


def test_large_and_fractional_values_keep_their_precision() -> None:
    text = render([Family("t_bytes", "gauge", "h").add(2**62).add(0.0421, {"k": "v"}).add(1.7e9, {"k": "w"})])
    assert "t_bytes 4611686018427387904\n" in text
    assert 't_bytes{k="v"} 0.0421\n' in text
    assert 't_bytes{k="w"} 1700000000\n' in text


# --- the check's metrics -----------------------------------------------------------------------


@pytest.mark.parametrize("tree", HOSTS, ids=[p.name for p in HOSTS])
def test_every_planted_host_passes_promtool(tree: Path) -> None:
    report = report_for(planted(tree), RuleOptions())
    text = render_report(report)
    assert_promtool_clean(text)
    # one series per finding id and severity, each the count of those findings
    series = samples(text, "gpuhost_finding")
    assert sum(int(line.rsplit(" ", 1)[1]) for line in series) == len(report.findings)
    for finding in report.findings:
        assert f'gpuhost_finding{{id="{finding.id}",area="{finding.area}",severity="{finding.severity.value}"}}' in text
    assert samples(text, "gpuhost_check_timestamp_seconds") == [
        f"gpuhost_check_timestamp_seconds {report.facts.collected_at!r}"
    ]


def test_a_failing_planted_host_exports_its_failures_and_facts() -> None:
    report = report_for(planted(FIXTURES / "hosts" / "p5-nvswitch-drift"), RuleOptions())
    text = render_report(report)
    assert 'gpuhost_finding{id="gpu.fabric-manager",area="gpu",severity="fail"} 1' in text
    assert 'gpuhost_finding{id="gpu.next-kernel",area="gpu",severity="fail"} 1' in text
    assert 'gpuhost_finding{id="gpu.xid",area="gpu",severity="fail"} 2' in text
    assert sorted(samples(text, "gpuhost_gpu_xid_events_total")) == [
        'gpuhost_gpu_xid_events_total{code="119"} 1',
        'gpuhost_gpu_xid_events_total{code="13"} 1',
        'gpuhost_gpu_xid_events_total{code="79"} 1',
    ]
    assert "# TYPE gpuhost_gpu_xid_events_total counter" in text
    assert samples(text, "gpuhost_gpu_driver_info") == [
        'gpuhost_gpu_driver_info{version="",kernel_module_version="580.126.09",cuda_version="",'
        'open_kernel_module="true"} 1'
    ]
    assert 'gpuhost_source_unreadable{source="gpu"} 1' in text
    assert "gpuhost_check_exit_code 3" in text


def test_a_healthy_gpu_host_exports_its_ok_series_and_driver() -> None:
    facts = seed_facts()
    facts.docker.containers = []  # the --gpus container recreated elsewhere: nothing exposed
    facts.comfyui.containers = [comfyui("comfyui", Phase.READY, queue=3)]
    report = report_for(facts, RuleOptions())
    text = render_report(report)
    assert_promtool_clean(text)
    ok = [f for f in report.findings if f.severity is Severity.OK]
    assert ok
    for finding in ok:
        assert f'gpuhost_finding{{id="{finding.id}",area="{finding.area}",severity="ok"}}' in text
    assert f"gpuhost_gpus {len(facts.gpu.gpus)}" in text and facts.gpu.gpus
    assert samples(text, "gpuhost_gpu_driver_info")[0].startswith(
        f'gpuhost_gpu_driver_info{{version="{facts.gpu.driver_version}",'
    )
    assert sorted(samples(text, "gpuhost_comfyui_phase")) == [
        'gpuhost_comfyui_phase{container="comfyui",phase="failed"} 0',
        'gpuhost_comfyui_phase{container="comfyui",phase="ready"} 1',
        'gpuhost_comfyui_phase{container="comfyui",phase="stalled"} 0',
        'gpuhost_comfyui_phase{container="comfyui",phase="starting"} 0',
    ]
    queue = samples(text, "gpuhost_comfyui_queue_remaining")
    assert queue == ['gpuhost_comfyui_queue_remaining{container="comfyui"} 3']


def test_disks_export_free_and_size_for_data_root_and_models(tmp_path: Path) -> None:
    facts = seed_facts()
    location = facts.docker.data_root_location
    assert location is not None
    location.free_bytes, location.total_bytes = 5 * 2**30, 100 * 2**30
    facts.models.directory, facts.models.free_bytes, facts.models.total_bytes = "/srv/models", 7, 10
    text = render_report(report_for(facts, RuleOptions()))
    assert f'gpuhost_disk_free_bytes{{use="data-root",path="{location.path}"}} {5 * 2**30}' in text
    assert f'gpuhost_disk_size_bytes{{use="data-root",path="{location.path}"}} {100 * 2**30}' in text
    assert 'gpuhost_disk_free_bytes{use="models",path="/srv/models"} 7' in text
    assert 'gpuhost_disk_size_bytes{use="models",path="/srv/models"} 10' in text
    # unknown free space is no series at all, not a 0 that would read as a full disk
    facts.models.free_bytes = None
    assert 'use="models"' not in render_report(report_for(facts, RuleOptions()))


def test_hostile_names_and_messages_stay_one_escaped_label_or_nothing() -> None:
    facts = seed_facts()
    facts.comfyui.containers = [comfyui(HOSTILE, Phase.STALLED), comfyui("second\ninstance", Phase.READY, 0)]
    facts.models.directory, facts.models.free_bytes, facts.models.total_bytes = "/srv/" + HOSTILE, 1, 2
    report = report_for(facts, RuleOptions())
    secret = "s3cr3t-TOKEN-value"
    add_findings(report, [
        Finding("comfyui.workflow", "comfyui", Severity.FAIL, f'bad "{HOSTILE}" {secret}', f"remedy\n{secret}",
                {"env": [f"API_KEY={secret}"], "text": HOSTILE}),
    ])
    text = render_report(report)
    assert_promtool_clean(text)
    escaped = escape_label_value(HOSTILE)
    assert f'gpuhost_comfyui_phase{{container="{escaped}",phase="stalled"}} 1' in text
    assert 'gpuhost_comfyui_queue_remaining{container="second\\ninstance"} 0' in text
    assert f'gpuhost_disk_free_bytes{{use="models",path="/srv/{escaped}"}} 1' in text
    # messages, remedies and evidence never become labels; no secret anywhere
    assert secret not in text
    assert "bad " not in text
    # every line is a comment or one sample: a newline inside a label never splits it
    for line in text.splitlines():
        assert line.startswith("# ") or line.startswith("gpuhost_"), line


# --- the agent: stdout and the textfile ----------------------------------------------------------


def agent(*args: str) -> list[str]:
    return [
        "check", "--root", str(FIXTURES / "hosts" / "p5-nvswitch-drift"),
        "--dev-root", str(FIXTURES / "hosts" / "p5-nvswitch-drift" / "dev"), "--docker-host", NO_DOCKER, *args,
    ]


def read_samples(path: Path) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in path.read_text().splitlines() if not line.startswith("#"))


def test_agent_prints_the_same_metrics_as_the_renderer(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(agent("--format", "prometheus")) == 3  # the check's exit code, as with JSON
    text = capsys.readouterr().out
    assert_promtool_clean(text)
    assert 'gpuhost_finding{id="gpu.fabric-manager",area="gpu",severity="fail"} 1' in text


def test_agent_writes_the_textfile_atomically_and_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(agent("--format", "prometheus", "--textfile-directory", str(tmp_path))) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == str(tmp_path / CHECK_FILE)
    assert summary["check_exit_code"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE, CHECK_FILE]  # no temporary file left
    for name in (CHECK_FILE, RUN_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
        assert_promtool_clean((tmp_path / name).read_text())
    run = read_samples(tmp_path / RUN_FILE)
    assert run["gpuhost_check_run_success"] == "1"
    assert run["gpuhost_check_run_exit_code"] == "3"


@pytest.mark.parametrize(
    "bad, code",
    [(["--min-free-gb", "nan"], 2), (["--run-as", "nobody:"], 2), (["--docker-host", "ftp://x"], 2)],
    ids=["nan", "run-as", "docker-host"],
)
def test_a_check_that_fails_to_run_keeps_the_previous_file_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: list[str], code: int
) -> None:
    assert agent_main(agent("--format", "prometheus", "--textfile-directory", str(tmp_path))) == 0
    previous = (tmp_path / CHECK_FILE).read_bytes()
    capsys.readouterr()
    assert agent_main(agent("--format", "prometheus", "--textfile-directory", str(tmp_path), *bad)) == code
    answer = json.loads(capsys.readouterr().out)
    assert answer["exit_code"] == code and answer["kept"] == CHECK_FILE
    assert answer["error"].startswith("gpuhost check did not run")
    assert (tmp_path / CHECK_FILE).read_bytes() == previous
    run = read_samples(tmp_path / RUN_FILE)
    assert run["gpuhost_check_run_success"] == "0"
    assert run["gpuhost_check_run_exit_code"] == str(code)


def test_a_crash_in_the_check_is_exported_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpuhost.agent.check

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("collector bug")

    monkeypatch.setattr(gpuhost.agent.check, "run_check", broken)
    assert agent_main(agent("--format", "prometheus", "--textfile-directory", str(tmp_path))) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert json.loads(out.out)["error"] == "gpuhost check did not run: RuntimeError: collector bug"
    assert not (tmp_path / CHECK_FILE).exists()
    assert read_samples(tmp_path / RUN_FILE)["gpuhost_check_run_success"] == "0"


@pytest.mark.parametrize(
    "directory, message",
    [
        ("{tmp}/absent", "does not exist"),
        ("{tmp}/file", "is not a directory"),
        ("relative/dir", "absolute path"),
        ("{tmp}/../etc", "absolute path without '..'"),
        ("{tmp} ", "white space"),
        ("", "white space"),
    ],
)
def test_a_bad_textfile_directory_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], directory: str, message: str
) -> None:
    (tmp_path / "file").write_text("")
    before = sorted(os.listdir(tmp_path))
    path = directory.format(tmp=tmp_path)
    assert agent_main(agent("--format", "prometheus", "--textfile-directory", path)) == 2
    answer = json.loads(capsys.readouterr().out)
    assert message in answer["error"]
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(
    "args", [["--textfile-directory", "/tmp"], ["--json", "--format", "prometheus"], ["--format", "yaml"]]
)
def test_agent_refuses_contradicting_options(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert agent_main(agent(*args)) == 2
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2


# --- the queue of a ready ComfyUI, and the CLI ----------------------------------------------------


def ready_at(url: str) -> Verdict:
    return Verdict(phase=Phase.READY, probe_url=f"{url}/system_stats")


@pytest.mark.parametrize(
    "answer, expected",
    [
        (b'{"exec_info": {"queue_remaining": 3}}', 3),
        (b'{"exec_info": {"queue_remaining": 0}}', 0),
        (b'{"exec_info": {"queue_remaining": -1}}', None),
        (b'{"exec_info": {"queue_remaining": true}}', None),
        (b'{"exec_info": {"queue_remaining": "3"}}', None),
        (b'{"exec_info": {}}', None),
        (b"[]", None),
        (b"not json", None),
        (b'{"exec_info": {"queue_remaining": NaN}}', None),
    ],
)
def test_queue_length_of_a_ready_server(answer: bytes, expected: int | None) -> None:
    from gpuhost.comfyui.facts import queue_remaining
    from tests.support.bad_servers import BadServer, Script

    with BadServer(Script.body(answer)) as server:
        assert queue_remaining(ready_at(server.url)) == expected
        assert server.requests and server.requests[0].startswith("GET /prompt ")


def test_queue_is_not_asked_of_a_server_that_is_not_ready_and_is_bounded() -> None:
    import time

    from gpuhost.comfyui.facts import queue_remaining
    from tests.support.bad_servers import BadServer, Script, http_response

    with BadServer(Script.body(b'{"exec_info": {"queue_remaining": 3}}')) as server:
        assert queue_remaining(Verdict(phase=Phase.STARTING, probe_url=f"{server.url}/system_stats")) is None
        assert server.requests == []
    # a server that trickles its answer, and one that answers too much, get no queue within the deadline
    with BadServer(Script(prefix=http_response(b"{}", length=64)[:-2], trickle=b"x" * 100, interval=0.5)) as slow:
        start = time.monotonic()
        assert queue_remaining(ready_at(slow.url), timeout=1.0) is None
        assert time.monotonic() - start < 5
    with BadServer(Script(prefix=http_response(b"", length=10**8), filler_bytes=10**8)) as large:
        assert queue_remaining(ready_at(large.url)) is None


def test_cli_format_prometheus_prints_metrics_and_refuses_a_fleet() -> None:
    from typer.testing import CliRunner

    from gpuhost.cli import app

    tree = FIXTURES / "hosts" / "p5-nvswitch-drift"
    base = ["check", "--root", str(tree), "--dev-root", str(tree / "dev"), "--docker-host", NO_DOCKER]
    result = CliRunner().invoke(app, [*base, "--format", "prometheus"])
    assert result.exit_code == 3, result.output
    assert_promtool_clean(result.stdout)
    assert 'gpuhost_finding{id="gpu.fabric-manager",area="gpu",severity="fail"} 1' in result.stdout
    as_json = CliRunner().invoke(app, [*base, "--format", "json"])
    assert json.loads(as_json.stdout)["exit_code"] == 3
    for bad, message in (
        (["--format", "prometheus", "--host", "gpu-01"], "each host's node_exporter"),
        (["--format", "prometheus", "--json"], "two outputs"),
        (["--format", "yaml"], "choose table, json or prometheus"),
    ):
        refused = CliRunner().invoke(app, [*base, *bad])
        assert refused.exit_code == 2, refused.output
        assert message in " ".join(refused.output.split())
