"""Whatever the options, `gpuhost` (typer) and `gpuhost-agent` (argparse) answer with an exit code from 0
to 3, never a traceback, and under --json exactly one strict JSON document (no NaN or Infinity).

Commands run for real: `check` on a captured tree with no Docker, `storage plan` and `storage probe` on
this machine's paths, `tune-ebs` with every AWS and Docker address pointing at a closed local port.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.cli import app
from gpuhost.facts.cdi import parse_spec
from gpuhost.facts.docker import read_daemon_json

NO_DOCKER = "unix:///nonexistent/gpuhost-test/docker.sock"
# the fixtures these properties use hold nothing an example changes (a captured tree, the environment)
SHARED_FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse_constant)


class Outcome:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def json(self) -> Any:
        return strict_json(self.stdout)


def cli(*args: str) -> Outcome:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"gpuhost {' '.join(args)[:300]} raised {result.exception!r}") from result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def agent(*argv: str) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = agent_main(list(argv))
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_answers(outcome: Outcome, as_json: bool) -> None:
    assert outcome.code in (0, 1, 2, 3), (outcome.code, outcome.stdout[-500:], outcome.stderr[-500:])
    assert "Traceback" not in outcome.stdout + outcome.stderr
    if as_json:
        document = outcome.json
        assert isinstance(document, dict)
        if "error" in document:
            assert document["exit_code"] == outcome.code == 2 or document["exit_code"] == outcome.code


# --- option values people mistype, and values that broke commands before ---------------------------

NUMBERS = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "9" * 400, "-1", "0", "abc", "", " 5", "5\n"]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
TEXT = st.one_of(
    st.sampled_from(["", " ", "..", "../../info", "a b", "x\n", "\x00", "//etc", "/dev/null", "é" * 3]),
    st.text(max_size=30),
)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def offline_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials that sign requests, and every AWS or Docker address at a closed local port."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)


# --- usage errors from typer itself (item 22) ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["tune-ebs", "--iops", "abc", "--json"],
        ["tune-ebs", "--json", "--throughput", "1.5"],
        ["tune-ebs", "--json", "--no-such-option"],
        ["tune-ebs", "--json", "--volume-id"],
        ["check", "--forks", "many", "--json"],
        ["check", "--json", "--min-free-gb", "lots"],
        ["storage", "plan", "--device-timeout", "x", "--json"],
        ["storage", "probe", "--json", "--size-mib", "1.5"],
        ["storage", "--json", "plan", "--label"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_under_json_are_json_on_stdout(args: list[str]) -> None:
    outcome = cli(*args)
    assert outcome.code == 2
    error = outcome.json
    assert set(error) == {"error", "remedy", "exit_code"}
    assert error["exit_code"] == 2 and error["error"] and "--help" in error["remedy"]


def test_usage_errors_without_json_stay_text_on_stderr() -> None:
    outcome = cli("tune-ebs", "--iops", "abc")
    assert outcome.code == 2
    assert outcome.stdout == ""
    assert "'abc' is not a valid int" in outcome.stderr


def test_help_and_version_are_unchanged_by_json() -> None:
    assert cli("tune-ebs", "--help", "--json").code == 0
    assert cli("--version").code == 0


# --- check: Docker addresses, --min-free-gb, CDI specs and daemon.json (items 3, 9, 21) ------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc" / "cdi").mkdir(parents=True)
    (root / "proc").mkdir()
    return root


def check_args(root: Path, *extra: str) -> list[str]:
    return ["check", "--root", str(root), "--dev-root", str(root / "dev"), "--daemon-json",
            str(root / "daemon.json"), *extra]


@pytest.mark.parametrize("address", ["tpc://10.0.0.5:2375", "tcp://10.0.0.5", "tcp://10.0.0.5:99999", "unix://x"])
def test_check_refuses_a_malformed_docker_address(tree: Path, address: str) -> None:
    outcome = cli(*check_args(tree, "--docker-host", address, "--json"))
    assert outcome.code == 2
    assert address in outcome.json["error"]
    text = cli(*check_args(tree, "--docker-host", address))
    assert text.code == 2 and "docker.engine" not in text.stdout
    for command in ("check", "facts"):
        refused = agent(command, "--root", str(tree), "--docker-host", address)
        assert refused.code == 2 and address in refused.json["error"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e400"])
def test_check_refuses_a_min_free_gb_that_cannot_fail_or_always_fails(tree: Path, value: str) -> None:
    outcome = cli(*check_args(tree, "--docker-host", NO_DOCKER, "--min-free-gb", value, "--json"))
    assert outcome.code == 2
    assert "--min-free-gb" in outcome.json["error"]
    assert agent("check", "--root", str(tree), "--docker-host", NO_DOCKER, "--min-free-gb", value).code == 2


def findings_of(outcome: Outcome, area: str) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in outcome.json["findings"] if f["area"] == area}


@pytest.mark.parametrize(
    "body",
    [
        "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices: 5\n",
        "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices: [5, {name: all, containerEdits: 3}]\n",
        "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ncontainerEdits: {mounts: 5, hooks: [{args: 7}]}\n",
        "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices: {name: all}\n",
        "cdiVersion: [1]\nkind: {a: b}\n",
        "- just\n- a list\n",
    ],
)
def test_a_cdi_spec_of_the_wrong_shape_is_a_finding(tree: Path, body: str) -> None:
    (tree / "etc" / "cdi" / "nvidia.yaml").write_text(body)
    outcome = cli(*check_args(tree, "--docker-host", NO_DOCKER, "--json"))
    assert outcome.code in (1, 3)
    finding = findings_of(outcome, "cdi")["cdi.spec-invalid"]
    assert finding["severity"] == "fail" and "nvidia.yaml" in finding["message"]


@pytest.mark.parametrize(
    "raw", [b'{"a": "\xff\xfe"}', b"\xff\xfe{\x00}\x00", b'\xef\xbb\xbf{"log-driver": "\xe9"}'], ids=str
)
def test_a_daemon_json_that_is_not_utf8_is_a_finding(tree: Path, raw: bytes) -> None:
    (tree / "daemon.json").write_bytes(raw)
    outcome = cli(*check_args(tree, "--docker-host", NO_DOCKER, "--json"))
    assert outcome.code in (1, 3)
    finding = findings_of(outcome, "docker")["docker.daemon-json"]
    assert finding["severity"] == "fail" and "UTF-8" in finding["message"]
    assert agent("check", "--root", str(tree), "--docker-host", NO_DOCKER, "--daemon-json",
                 str(tree / "daemon.json")).code in (1, 3)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["devices", "containerEdits", "name", "mounts", "hooks", "deviceNodes",
                                         "hostPath", "path", "args", "cdiVersion", "kind", "env"]), children,
                        max_size=4),
    ),
    max_leaves=12,
)


@given(YAML_VALUES)
@example({"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": 5})
@example({"cdiVersion": "0.6.0", "kind": "x/y", "containerEdits": {"hooks": [{"args": 5}]}})
def test_any_cdi_spec_document_is_parsed_or_reported_invalid(document: Any) -> None:
    spec = parse_spec("/etc/cdi/x.yaml", json.dumps(document))
    assert spec.valid or spec.error
    assert all(isinstance(name, str) for name in spec.devices)


@given(st.binary(max_size=60))
def test_any_daemon_json_bytes_are_read_or_reported(raw: bytes) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpuhost-daemon-{os.getpid()}.json"
    path.write_bytes(raw)
    try:
        value, error = read_daemon_json(str(path))
    finally:
        path.unlink()
    assert (value is None) == bool(error)


# --- the properties, command by command ----------------------------------------------------------------


@given(
    min_free=NUMBERS,
    run_as=st.one_of(st.none(), TEXT, st.sampled_from(["1000:1000,44", "-1", "99999999999999999999", "0:0"])),
    docker_host=st.one_of(st.none(), st.sampled_from(["tpc://x:1", "tcp://h", "unix://rel", "", " ", NO_DOCKER])),
    strict=st.booleans(),
    as_json=st.booleans(),
)
@SHARED_FIXTURES
def test_check_answers_whatever_the_options(
    tree: Path, min_free: str, run_as: str | None, docker_host: str | None, strict: bool, as_json: bool
) -> None:
    args = check_args(tree, "--docker-host", docker_host if docker_host is not None else NO_DOCKER,
                      "--min-free-gb", min_free)
    if run_as is not None:
        args += ["--run-as", run_as]
    if strict:
        args.append("--strict")
    if as_json:
        args.append("--json")
    assert_answers(cli(*args), as_json)
    agent_args = ["check", "--root", str(tree), "--docker-host", docker_host or NO_DOCKER, "--min-free-gb", min_free]
    if run_as is not None:
        agent_args += ["--run-as", run_as]
    assert_answers(agent(*agent_args), True)


def _digest(directory: Path) -> str:
    entries = sorted(str(p.relative_to(directory)) + hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in directory.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


@given(
    device=st.one_of(TEXT, st.sampled_from(["/dev/null", "/dev/zero", "/proc/self/status", "/", "nvme1n1",
                                            "/" + "a" * 5000, "/dev/gpuhost-no-such-disk"])),
    mount_path=st.one_of(TEXT, st.sampled_from(["/mnt/docker", "//etc", "/var", "/home/x", "/data/../etc"])),
    label=st.one_of(st.just("gh-docker"), TEXT),
    timeout=NUMBERS,
    as_json=st.booleans(),
)
def test_storage_plan_answers_whatever_the_options(
    tmp_path_factory: pytest.TempPathFactory, device: str, mount_path: str, label: str, timeout: str, as_json: bool
) -> None:
    work = tmp_path_factory.mktemp("plan")
    (work / "daemon.json").write_text('{"log-driver": "local"}')
    before = _digest(work)
    options = ["--device", device, "--mount-path", mount_path, "--label", label, "--device-timeout", timeout,
               "--daemon-json", str(work / "daemon.json"), "--config", str(work / "absent.json"),
               "--docker-host", NO_DOCKER]
    assert_answers(cli("storage", "plan", *options, *(["--json"] if as_json else [])), as_json)
    assert_answers(agent("storage-plan", *options), True)
    assert _digest(work) == before


@given(
    image_size=st.one_of(NUMBERS, TEXT, st.sampled_from(["140GB", "inf", "1e400GB", "9" * 400])),
    # sizes the probe would really write stay small: the property is about what it refuses
    size_mib=st.one_of(NUMBERS.filter(lambda v: not v.isdigit() or not 16 <= int(v) <= 10**9), st.just("16")),
    as_json=st.booleans(),
)
def test_storage_probe_refuses_bad_sizes_and_changes_nothing(
    tmp_path_factory: pytest.TempPathFactory, image_size: str, size_mib: str, as_json: bool
) -> None:
    work = tmp_path_factory.mktemp("probe")
    (work / "keep").write_text("data")
    before = _digest(work)
    options = ["--path", str(work), "--image-size", image_size, "--size-mib", size_mib, "--docker-host", NO_DOCKER]
    outcome = cli("storage", "probe", *options, *(["--json"] if as_json else []))
    assert_answers(outcome, as_json)
    assert_answers(agent("storage-probe", *options), True)
    assert _digest(work) == before


@given(
    iops=st.one_of(st.none(), NUMBERS),
    throughput=st.one_of(st.none(), NUMBERS),
    preset=st.one_of(st.none(), st.sampled_from(["pull", "baseline", "max", "nope", ""])),
    image_size=st.one_of(st.none(), NUMBERS, st.sampled_from(["140GB", "inf"])),
    within=st.one_of(st.none(), NUMBERS, st.just("5m")),
    timeout=st.one_of(st.none(), NUMBERS),
    poll=st.one_of(st.none(), NUMBERS),
    image=st.one_of(st.none(), TEXT, st.just("comfyui:0.3.64")),
    volume_id=st.sampled_from(["vol-0123456789abcdef0", "vol-0123456789abcdef0\n", "vol-x", ""]),
    region=st.sampled_from(["us-east-1", "us-east-1\n", "mars-1", ""]),
    endpoint=st.one_of(st.none(), st.sampled_from(["http://[::1", "http://127.0.0.1:99999", "ftp://x", "http://a "])),
    as_json=st.booleans(),
)
@SHARED_FIXTURES
def test_tune_ebs_answers_whatever_the_options(
    offline_aws: None,
    iops: str | None,
    throughput: str | None,
    preset: str | None,
    image_size: str | None,
    within: str | None,
    timeout: str | None,
    poll: str | None,
    image: str | None,
    volume_id: str,
    region: str,
    endpoint: str | None,
    as_json: bool,
) -> None:
    args = ["--volume-id", volume_id, "--region", region, "--dry-run", "--wait"]
    for flag, value in (("--iops", iops), ("--throughput", throughput), ("--preset", preset),
                        ("--for-image-size", image_size), ("--within", within), ("--timeout", timeout),
                        ("--poll-interval", poll), ("--when-image-present", image), ("--endpoint-url", endpoint)):
        if value is not None:
            args += [flag, value]
    assert_answers(cli("tune-ebs", *args, *(["--json"] if as_json else [])), as_json)
    assert_answers(agent("tune-ebs", *args), True)
