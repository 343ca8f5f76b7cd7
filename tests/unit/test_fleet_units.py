"""Fleet checks without a fleet: target parsing, inventory variables, ssh config resolution, the
facts round trip that makes remote verdicts equal local ones, the local inventory and bad input."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import paramiko
import pytest
from typer.testing import CliRunner

from gpuhost.check import report_for
from gpuhost.cli import app
from gpuhost.fleet.inventory import load_inventory, target_from_vars
from gpuhost.fleet.remote import Agent
from gpuhost.fleet.ssh import load_ssh_config, resolve
from gpuhost.fleet.targets import Target, parse_host_spec, parse_ssh_args
from gpuhost.hostfacts import HostFacts, collect_host_facts
from gpuhost.model import UsageError, from_jsonable, to_jsonable
from gpuhost.rules import RuleOptions, RunAs

REPO = Path(__file__).resolve().parents[2]


def gpuhost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (Ansible's inventory code is imported once, not per call)."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "160", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("spec", "user", "hostname", "port"),
    [
        ("gpu-01", None, "gpu-01", None),
        ("ubuntu@10.0.3.7", "ubuntu", "10.0.3.7", None),
        ("h2:2222", None, "h2", 2222),
        ("ec2-user@gpu-02.example.com:22", "ec2-user", "gpu-02.example.com", 22),
        ("admin@[2001:db8::7]:2200", "admin", "2001:db8::7", 2200),
    ],
)
def test_host_spec(spec: str, user: str | None, hostname: str, port: int | None) -> None:
    target = parse_host_spec(spec)
    assert (target.name, target.user, target.hostname, target.port) == (spec, user, hostname, port)


@pytest.mark.parametrize("spec", ["", "a b", "user@", "h:port", "h:70000", "h:0", "@h", "h:22:22"])
def test_bad_host_spec(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_host_spec(spec)


def test_ssh_args_from_inventory() -> None:
    config, options = parse_ssh_args(
        "-F /etc/fleet/ssh_config -o ProxyJump=bastion -o 'StrictHostKeyChecking accept-new' -J jump2 -p 2222 "
        "-i ~/.ssh/gpu -oUser=ops -C",
        "test",
    )
    assert config == "/etc/fleet/ssh_config"
    assert options == {
        "proxyjump": "jump2",
        "stricthostkeychecking": "accept-new",
        "port": "2222",
        "identityfile": "~/.ssh/gpu",
        "user": "ops",
    }
    with pytest.raises(UsageError):
        parse_ssh_args("-o", "test")


def test_target_from_ansible_vars(tmp_path: Path) -> None:
    target = target_from_vars(
        "gpu-07",
        {
            "ansible_host": "10.1.2.3",
            "ansible_port": 2202,
            "ansible_user": "ubuntu",
            "ansible_ssh_private_key_file": "~/.ssh/fleet",
            "ansible_ssh_common_args": f"-F {tmp_path}/cfg -o ProxyJump=ops@bastion:2222",
            "ansible_python_interpreter": "/usr/bin/python3.11",
            "ansible_become": "yes",
        },
    )
    assert (target.hostname, target.port, target.user, target.python, target.become) == (
        "10.1.2.3",
        2202,
        "ubuntu",
        "/usr/bin/python3.11",
        True,
    )
    assert target.identity_files == [os.path.expanduser("~/.ssh/fleet")]
    assert target.ssh_config_file == f"{tmp_path}/cfg"
    assert target.ssh_options == {"proxyjump": "ops@bastion:2222"}
    assert not target.unsupported
    # aliases, interpreter discovery left to the default, and what a fleet check cannot do
    old = target_from_vars("gpu-08", {"ansible_ssh_host": "h8", "ansible_ssh_port": "22", "ansible_ssh_user": "u"})
    assert (old.hostname, old.port, old.user, old.python) == ("h8", 22, "u", "python3")
    auto = target_from_vars("gpu-09", {"ansible_python_interpreter": "auto_silent"})
    assert auto.python == "python3"
    assert target_from_vars("w", {"ansible_connection": "winrm"}).unsupported
    assert target_from_vars("s", {"ansible_become": True, "ansible_become_method": "su"}).unsupported
    assert target_from_vars("l", {"ansible_connection": "local"}).is_local
    with pytest.raises(UsageError):
        target_from_vars("bad", {"ansible_port": "ssh"})


def test_ssh_config_resolution(tmp_path: Path) -> None:
    key = tmp_path / "id_gpu"
    key.write_text("not read here\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "jump.conf").write_text("Host gpu-*\n  ProxyJump ops@bastion:2222\n")
    config_file = tmp_path / "config"
    config_file.write_text(
        f"Include {tmp_path}/conf.d/*.conf\n"
        "Host gpu-01\n  HostName 10.0.0.11\n  Port 2201\n"
        f"Host gpu-*\n  User ubuntu\n  IdentityFile {key}\n  IdentityFile {tmp_path}/missing\n"
        f"  UserKnownHostsFile {tmp_path}/kh1 {tmp_path}/kh2\n  StrictHostKeyChecking accept-new\n"
        "Host *\n  User nobody\n  Port 22\n"
    )
    config = load_ssh_config(str(config_file))
    settings = resolve(Target(name="gpu-01", hostname="gpu-01"), config)
    assert (settings.hostname, settings.port, settings.user) == ("10.0.0.11", 2201, "ubuntu")
    assert settings.identity_files == [str(key)]  # files that do not exist are not offered
    assert settings.proxy_jump == "ops@bastion:2222"
    assert settings.user_known_hosts == [f"{tmp_path}/kh1", f"{tmp_path}/kh2"]
    assert settings.accept_new
    assert settings.known_hosts_name == "[10.0.0.11]:2201"
    # the command line (--host, inventory) wins over the config, as with OpenSSH
    explicit_target = Target(name="x", hostname="gpu-01", port=22, user="root", ssh_options={"proxyjump": "none"})
    explicit = resolve(explicit_target, config)
    assert (explicit.port, explicit.user, explicit.proxy_jump, explicit.known_hosts_name) == (
        22,
        "root",
        None,
        "10.0.0.11",
    )
    other = resolve(Target(name="db", hostname="db"), config)
    assert (other.user, other.port, other.accept_new, other.proxy_jump) == ("nobody", 22, False, None)
    assert resolve(Target(name="db", hostname="db"), config, accept_new_host_keys=True).accept_new
    with pytest.raises(UsageError):
        load_ssh_config(str(tmp_path / "absent"))


def test_remote_facts_give_the_local_verdicts() -> None:
    """What the fleet does with a host's facts (JSON over SSH, rebuilt, rules here) gives the findings
    `gpuhost check` gives on that host, for every option that changes a verdict."""
    facts = collect_host_facts()
    rebuilt = from_jsonable(HostFacts, json.loads(json.dumps(to_jsonable(facts))))
    assert to_jsonable(rebuilt) == to_jsonable(facts)
    for options, strict in (
        (RuleOptions(), False),
        (RuleOptions(min_free_gib=1e9, run_as=RunAs(uid=1000, gids=[1000, 44])), True),
    ):
        here = report_for(facts, options, strict)
        there = report_for(rebuilt, options, strict)
        assert [f.to_dict() for f in there.findings] == [f.to_dict() for f in here.findings]
        assert (there.verdict, there.exit_code) == (here.verdict, here.exit_code)


def test_compiled_payload_only_for_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    agent = Agent.build()
    this = f"Python {sys.version_info[0]}.{sys.version_info[1]}.99"
    payload, compiled = agent.payload_for(this)
    assert compiled and payload != agent.data
    assert agent.payload_for("Python 3.9.16") == (agent.data, False)
    assert agent.payload_for("") == (agent.data, False)
    assert agent.payload_for("sh: 1: python3: not found") == (agent.data, False)
    path = tmp_path / "agent.pyz"
    path.write_bytes(payload)
    names = zipfile.ZipFile(path).namelist()
    assert "gpuhost/facts/__init__.pyc" in names and "gpuhost/facts/__init__.py" in names
    # the compiled agent runs and its modules come from the compiled files
    probe = (
        f"import sys; sys.path.insert(0, {str(path)!r}); sys.argv = ['agent', 'facts']; "
        "import gpuhost.agent, gpuhost.facts as f; print(f.__spec__.loader.get_filename('gpuhost.facts'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("__init__.pyc")
    facts = subprocess.run([sys.executable, str(path), "facts"], capture_output=True, text=True, check=True)
    assert "kernel" in json.loads(facts.stdout)
    # built once per controller: the next run reads it back
    assert len(list((tmp_path / "cache" / "gpuhost").glob("fleet-agent-*.pyz"))) == 1
    assert Agent.build().compiled() == payload


def test_local_inventory_runs_the_local_check() -> None:
    """inventories/local has localhost with ansible_connection local: checked in-process, no SSH."""
    fleet = gpuhost("check", "--inventory", "inventories/local/hosts.yml", "--json")
    single = gpuhost("check", "--json")
    data, local = json.loads(fleet.stdout), json.loads(single.stdout)
    (host,) = data["hosts"]
    assert (host["host"], host["fleet"]["agent"], host["fleet"]["address"]) == ("localhost", "local", "local")
    # two collections a moment apart: free bytes may move, the verdicts may not
    def verdicts(findings: list[dict[str, str]]) -> list[tuple[str, str]]:
        return [(f["id"], f["severity"]) for f in findings]

    assert verdicts(host["findings"]) == verdicts(local["findings"])
    assert host["exit_code"] == local["exit_code"]
    assert fleet.returncode == (0 if local["exit_code"] == 0 else 1)
    assert data["schema"] == "gpuhost.fleet/v1"


def test_inventory_directory_with_group_vars(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    gpu_hosts:\n      hosts:\n        gpu-01: {ansible_host: 10.0.0.1}\n"
        "        gpu-02: {ansible_host: 10.0.0.2, ansible_user: admin}\n    other:\n      hosts:\n        db-01:\n"
    )
    (tmp_path / "group_vars" / "gpu_hosts.yml").write_text("ansible_user: ubuntu\nansible_port: 2222\n")
    targets = {t.name: t for t in load_inventory(str(tmp_path), "gpu_hosts")}
    assert {n: (t.hostname, t.user, t.port) for n, t in targets.items()} == {
        "gpu-01": ("10.0.0.1", "ubuntu", 2222),
        "gpu-02": ("10.0.0.2", "admin", 2222),  # host vars win over group vars
    }
    assert [t.name for t in load_inventory(str(tmp_path), "all:!gpu-01")] == ["gpu-02", "db-01"]


def test_example_static_inventory() -> None:
    targets = {t.name: t for t in load_inventory(str(REPO / "inventories/example"))}
    assert sorted(targets) == ["gpu-1.example.com", "gpu-2.example.com"]
    assert (targets["gpu-1.example.com"].hostname, targets["gpu-1.example.com"].user) == ("192.0.2.10", "ubuntu")
    assert targets["gpu-2.example.com"].ssh_options == {"proxyjump": "ops@bastion.example.com"}


def test_unreadable_inventory_is_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "hosts.yml"
    broken.write_text("all:\n  hosts: [unclosed\n")
    result = gpuhost("check", "--inventory", str(broken))
    assert result.returncode == 2
    assert "has no hosts" in result.stderr


def test_local_inventory_in_process() -> None:
    (target,) = load_inventory(str(REPO / "inventories/local/hosts.yml"), "gpu_hosts")
    assert target.is_local and target.name == "localhost"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "user@"], "is not [USER@]HOST[:PORT]"),
        (["--host", "h:99999"], "outside 1-65535"),
        (["--inventory", "/nonexistent/inventory.yml"], "does not exist"),
        (["--limit", "gpu_hosts"], "--limit selects hosts of an inventory"),
        (["--inventory", "inventories/local/hosts.yml", "--limit", "nothing-like-this"], "matches no host"),
        (["--host", "h1", "--ssh-config", "/nonexistent/ssh_config"], "does not exist"),
        (["--host", "h1", "--forks", "0"], "--forks"),
    ],
)
def test_bad_input_exits_2(args: list[str], says: str) -> None:
    result = gpuhost("check", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr
    as_json = gpuhost("check", *args, "--json")
    assert as_json.returncode == 2
    if as_json.stdout:  # typer's own range errors print usage text, not JSON
        assert json.loads(as_json.stdout)["exit_code"] == 2


def test_known_hosts_lookup_covers_hashed_entries(tmp_path: Path) -> None:
    """OpenSSH hashes known_hosts names on Debian (HashKnownHosts yes): they still match."""
    from gpuhost.fleet.ssh import KnownHosts

    key = paramiko.Ed25519Key.from_private_key_file(str(_ed25519(tmp_path)))
    hashed = paramiko.HostKeys.hash_host("[10.0.0.5]:2201")
    (tmp_path / "known_hosts").write_text(f"{hashed} {key.get_name()} {key.get_base64()}\n")
    known = KnownHosts()
    found = known.lookup("[10.0.0.5]:2201", [str(tmp_path / "known_hosts"), str(tmp_path / "absent")])
    assert found == {"ssh-ed25519": key}
    assert known.lookup("[10.0.0.6]:2201", [str(tmp_path / "known_hosts")]) == {}


def test_known_hosts_lines_it_cannot_use_and_revoked_keys(tmp_path: Path) -> None:
    from gpuhost.fleet.ssh import ConnectFailure, KnownHosts, SshSettings, _Policy

    good = paramiko.Ed25519Key.from_private_key_file(str(_ed25519(tmp_path)))
    revoked = paramiko.Ed25519Key.from_private_key_file(str(_ed25519(tmp_path / "r")))
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        "garbage\n"
        "h1 ssh-ed25519 not-base64!\n"
        f"@cert-authority *.example.com {good.get_name()} {good.get_base64()}\n"
        f"@revoked * {revoked.get_name()} {revoked.get_base64()}\n"
        f"h1,h2 {good.get_name()} {good.get_base64()}\n"
        f"h3 {revoked.get_name()} {revoked.get_base64()}\n"
    )
    known = KnownHosts()
    assert known.lookup("h2", [str(path)]) == {"ssh-ed25519": good}
    assert known.lookup("h3", [str(path)]) == {}  # listed, but revoked
    policy = _Policy(known, SshSettings(hostname="h3", user_known_hosts=[str(path)], accept_new=True), "")
    with pytest.raises(ConnectFailure, match="@revoked"):
        policy.missing_host_key(paramiko.SSHClient(), "h3", revoked)
    assert "h3" in path.read_text() and path.read_text().count(revoked.get_base64()) == 2  # nothing added


def _ed25519(directory: Path) -> Path:
    from tests.support.fleetlab import new_key

    private, _ = new_key()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "id"
    path.write_bytes(private)
    return path


@pytest.mark.parametrize(
    ("text", "uid", "gids"),
    [
        ("0", 0, []),
        ("1000", 1000, []),
        ("1000:1000,44", 1000, [1000, 44]),
        ("4294967294:4294967294", 4294967294, [4294967294]),
    ],
)
def test_run_as(text: str, uid: int, gids: list[int]) -> None:
    identity = RunAs.parse(text)
    assert (identity.uid, identity.gids) == (uid, gids)


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "99999999999999999999",
        "4294967295",
        "1000:1000,,44",
        "1000:",
        "1000:44,",
        ":44",
        "1000:-5",
        " 1000",
        "1000\n",
        "+1000",
        "1_000",
        "\u0661\u0660\u0660\u0660",  # Arabic-Indic digits: int() takes them, uids are ASCII
        "",
    ],
)
def test_run_as_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--run-as"):
        RunAs.parse(text)


@pytest.mark.parametrize("value", ["-1", "99999999999999999999", "1000:1000,,44"])
def test_run_as_on_the_command_line_is_exit_2(value: str) -> None:
    result = gpuhost("check", "--run-as", value, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2 and "--run-as" in error["error"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e300])
def test_fleet_timeouts_refuse_what_cannot_be_waited(value: float) -> None:
    from gpuhost.fleet import FleetOptions

    with pytest.raises(UsageError, match="--connect-timeout"):
        FleetOptions.parse(connect_timeout=value)
    with pytest.raises(UsageError, match="--timeout"):
        FleetOptions.parse(timeout=value)
    assert FleetOptions.parse(connect_timeout=2.5, timeout=30).connect_timeout == 2.5


@pytest.mark.parametrize("option", ["--connect-timeout", "--timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400"])
def test_fleet_timeouts_on_the_command_line_are_exit_2(option: str, value: str) -> None:
    result = gpuhost("check", "--host", "127.0.0.1:9", option, value, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if result.stdout:  # typer's own type errors print usage text, not JSON
        assert json.loads(result.stdout)["exit_code"] == 2


def test_limit_from_a_missing_file_is_exit_2() -> None:
    result = gpuhost("check", "-i", "inventories/local/hosts.yml", "--limit", "@/nonexistent/limit", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = json.loads(result.stdout)
    assert "--limit" in error["error"] and "/nonexistent/limit" in error["error"]


@pytest.mark.parametrize(
    "config",
    [
        "Host h1\n  HostName\n",  # a key without a value
        "Host h1\n  Port ssh\n",  # a port that is not a number
        "Match exec\n  User x\n",  # Match without its argument
        "Host h1\n  Port 99999\n",  # a port out of range
        "Host\n",  # a pattern missing
    ],
)
def test_ssh_config_paramiko_cannot_read_is_exit_2(tmp_path: Path, config: str) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    result = gpuhost("check", "--host", "h1", "--ssh-config", str(path), "--connect-timeout", "1", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = json.loads(result.stdout)
    assert str(path) in error["error"]


def test_a_port_that_answers_http_is_not_called_silent(tmp_path: Path) -> None:
    """An HTTP server answers the SSH greeting with `400 Bad Request` and hangs up at once: that is
    something other than sshd listening there, not a server that said nothing."""
    import socket
    import threading
    import time

    from gpuhost.fleet.ssh import ConnectFailure, Connector

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)

    def answer_http() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                conn.recv(256)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = threading.Thread(target=answer_http, daemon=True)
    server.start()
    config = paramiko.SSHConfig.from_text(f"Host *\n  UserKnownHostsFile {tmp_path}/kh\n")
    connector = Connector(config, connect_timeout=3)
    target = Target(name="web", hostname="127.0.0.1", port=listener.getsockname()[1], user="u")
    start = time.monotonic()
    try:
        with pytest.raises(ConnectFailure) as failure:
            connector.connect(target, time.monotonic() + 10)
    finally:
        listener.close()
        server.join(10)
    assert time.monotonic() - start < 3
    assert failure.value.finding_id == "fleet.unreachable"
    assert "within 3 s" not in failure.value.message
    assert "not SSH" in failure.value.message


def test_the_run_script_checks_the_copy_and_always_removes_it(tmp_path: Path) -> None:
    """What runs on the host after the copy (over SFTP or through `cat`): a damaged copy is never run;
    the private directory is removed either way, and the agent's exit code comes back."""
    import hashlib

    from gpuhost.fleet.remote import DAMAGED, DAMAGED_EXIT, run_script

    target = Target(name="h", hostname="h", python="/bin/sh")
    payload = b"exit 3\n"  # an "agent" that /bin/sh runs, exiting 3
    for content, expected in ((payload, 3), (payload + b"tampered", DAMAGED_EXIT)):
        directory = tmp_path / f"gpuhost-fleet.{expected}"
        directory.mkdir(mode=0o700)
        (directory / "gpuhost-agent.pyz").write_bytes(content)
        script = run_script(target, str(directory), hashlib.sha256(payload).hexdigest(), [])
        run = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30, check=False)
        assert run.returncode == expected, run.stderr
        assert (DAMAGED in run.stderr) == (expected == DAMAGED_EXIT)
        assert not directory.exists()
