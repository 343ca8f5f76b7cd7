"""The front door's pure parts: the role's checks (roles/comfyui_door/filter_plugins/door.py), its users
file module's SHA-512-crypt against glibc's crypt(3) and the specification's own vectors, and the health
document gpuhost-agent door-health writes (gpuhost.comfyui.health)."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gpuhost.comfyui.health import (
    HealthOptions,
    InstanceHealth,
    InstanceRef,
    health_document,
    judge,
    write_health,
)
from gpuhost.engine import EngineClient
from gpuhost.model import UsageError
from tests.support.paths import REPO

ROLE = REPO / "roles" / "comfyui_door"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOOR = load(ROLE / "filter_plugins" / "door.py", "comfyui_door_filters")
HTPASSWD = load(ROLE / "library" / "comfyui_door_htpasswd.py", "comfyui_door_htpasswd")
TOKEN = "0123456789abcdef-Token.+/~_=="


@pytest.mark.parametrize(
    ("address", "port", "expected"),
    [
        ("127.0.0.1", 8443, {"valid": True, "loopback": True, "listen": "127.0.0.1:8443"}),
        ("::1", "8443", {"valid": True, "loopback": True, "listen": "[::1]:8443"}),
        ("[::1]", 443, {"valid": True, "loopback": True, "listen": "[::1]:443"}),
        ("0.0.0.0", 8443, {"valid": True, "loopback": False, "listen": "0.0.0.0:8443"}),
        ("10.0.0.5", 8443, {"valid": True, "loopback": False}),
        ("localhost", 8443, {"valid": False}),
        (" 127.0.0.1", 8443, {"valid": False}),
        ("127.0.0.1", 0, {"valid": False}),
        ("127.0.0.1", 65536, {"valid": False}),
        ("127.0.0.1", True, {"valid": False}),
        ("127.0.0.1", "84 43", {"valid": False}),
        ("fe80::1%eth0", 8443, {"valid": False}),
    ],
)
def test_listen_addresses(address: str, port: Any, expected: dict[str, Any]) -> None:
    got = DOOR.listen(address, port)
    assert {k: got[k] for k in expected} == expected, got
    assert bool(got["why"]) is not got["valid"]


def test_upstreams_from_the_comfyui_roles_instances() -> None:
    got = DOOR.upstreams([{"name": "comfyui-1", "number": 1, "host_port": 8189, "address": "127.0.0.1"},
                          {"name": "comfyui-0", "number": 0, "host_port": 8188, "address": "0.0.0.0"},
                          {"name": "comfyui-2", "number": 2, "host_port": 8190, "address": "::1"}])
    assert got["valid"]
    assert [(i["number"], i["server"], i["pattern"]) for i in got["instances"]] == [
        (0, "127.0.0.1:8188", r"127\.0\.0\.1:8188"), (1, "127.0.0.1:8189", r"127\.0\.0\.1:8189"),
        (2, "[::1]:8190", r"\[::1\]:8190")]


@pytest.mark.parametrize(
    ("instances", "why"),
    [
        ([], "comfyui_door_instances is empty"),
        ("comfyui", "comfyui_door_instances is empty"),
        ([{"name": "a", "number": 0, "host_port": 1}, {"name": "b", "number": 0, "host_port": 2}], "of its own"),
        ([{"name": "a", "number": True, "host_port": 1}], "is not a whole number"),
        ([{"name": "a", "number": 0, "host_port": 70000}], "host_port 70000 is not a port number"),
        ([{"name": "a", "number": 0, "host_port": 8188, "address": "localhost"}], "is not an IP address"),
        (["a"], "is not a mapping"),
    ],
)
def test_bad_instances(instances: Any, why: str) -> None:
    got = DOOR.upstreams(instances)
    assert not got["valid"] and why in got["why"]


@pytest.mark.parametrize(
    ("token", "users", "problem"),
    [
        ("", [], "the door needs credentials"),
        (None, None, "the door needs credentials"),
        ("short", [], "must be 16 to 4096 characters"),
        ("x" * 15, [], "must be 16 to 4096 characters"),
        ("x" * 4097, [], "must be 16 to 4096 characters"),
        ("0123456789abcdef ", [], "must be 16 to 4096"),
        ('0123456789abcdef"', [], "must be 16 to 4096"),
        ("0123456789abcdef$x", [], "must be 16 to 4096"),
        ("0123456789ab=cdef", [], "must be 16 to 4096"),
        ("0123456789abcdef;", [], "must be 16 to 4096"),
        (12345678901234567, [], "comfyui_door_token is not a string"),
        ("", [{"name": "a:b", "password": "x"}], "the name must be 1 to 64 characters"),
        ("", [{"name": "", "password": "x"}], "the name must be"),
        ("", [{"name": "a", "password": ""}], "the password is empty"),
        ("", [{"name": "a", "password": 5}], "the password is empty or not a string"),
        ("", [{"name": "a", "password": "x\ny"}], "holds a control character"),
        ("", [{"name": "a", "password": "x" * 1025}], "longer than 1024"),
        ("", [{"name": "a"}], "is not exactly {name, password}"),
        ("", [{"name": "a", "password": "x", "role": "admin"}], "is not exactly {name, password}"),
        ("", [{"name": "a", "password": "x"}, {"name": "a", "password": "y"}], "a is listed twice"),
        ("", "alice:secret", "comfyui_door_users is a list"),
    ],
)
def test_bad_credentials_are_named_without_repeating_them(token: Any, users: Any, problem: str) -> None:
    problems = DOOR.secret_problems(token, users)
    assert any(problem in p for p in problems), problems
    for secret in ("0123456789abcdef", "secret", "x\ny", "x" * 20):
        assert not any(secret in p for p in problems)


def test_good_credentials_pass() -> None:
    assert DOOR.secret_problems(TOKEN, []) == []
    assert DOOR.secret_problems("", [{"name": "alice", "password": "wonder land: ünïcode"}]) == []
    assert DOOR.token_pattern(TOKEN) == "0123456789abcdef-Token[.][+]/~_=="
    with pytest.raises(ValueError, match="not a bearer token"):
        DOOR.token_pattern('x" off; default off; "')


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("header_timeout", "15 s", "is not a duration"),
        ("header_timeout", "0s", "is not a duration"),
        ("read_timeout", "-1", "is not a duration"),
        ("health_interval", "nan", "is not a duration"),
        ("max_upload", "100mb", "is not a size"),
        ("max_upload", "1e9", "is not a size"),
        ("header_buffer", "", "is not a size"),
        ("tls_names", ["gpu-01", "bad name"], "is neither a host name nor an IP address"),
        ("tls_names", [], "is a non-empty list"),
        ("state_dir", "/var/lib/../etc", "is not an absolute path"),
        ("secrets_dir", "etc/nginx", "is not an absolute path"),
        ("config_dir", "/etc/nginx/conf.d; include /tmp/x", "is not an absolute path"),
        ("log_dir", "/var/log/$host", "is not an absolute path"),
    ],
)
def test_bad_settings(name: str, value: Any, problem: str) -> None:
    settings = {"header_timeout": "15s", "body_timeout": "60s", "read_timeout": "1h", "health_interval": "10s",
                "max_upload": "100m", "header_buffer": "8k", "tls_names": ["gpu-01", "127.0.0.1", "*.example.com"],
                "state_dir": "/var/lib/gpuhost/door", "secrets_dir": "/etc/nginx/gpuhost",
                "config_dir": "/etc/nginx/conf.d", "log_dir": "/var/log/nginx", "unit_dir": "/etc/systemd/system"}
    assert DOOR.setting_problems(settings) == []
    problems = DOOR.setting_problems({**settings, name: value})
    assert len(problems) == 1 and problem in problems[0], problems
    assert DOOR.san(["gpu-01", "127.0.0.1", "::1", "gpu-01"]) == "DNS:gpu-01,IP:127.0.0.1,IP:::1"


# --- SHA-512-crypt --------------------------------------------------------------------------------------


def test_sha512_crypt_matches_the_specifications_vectors() -> None:
    assert HTPASSWD.sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
    assert HTPASSWD.sha512_crypt("Hello world!", "saltstringsaltstring", 10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/"
        "y3RnOaw5v.")


@pytest.mark.parametrize("password", ["", "a", "wonder land", "x" * 200, "ünïcode: ÿ", "y" * 64, "$6$x$y"])
def test_sha512_crypt_matches_glibc(password: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    salt = HTPASSWD.new_salt()
    assert len(salt) == 16 and set(salt) <= set(HTPASSWD.ITOA64)
    ours = HTPASSWD.sha512_crypt(password, salt)
    assert ours == crypt.crypt(password, "$6$" + salt)
    assert HTPASSWD.verify(password, ours) and not HTPASSWD.verify(password + "x", ours)
    assert HTPASSWD.verify(password, crypt.crypt(password, "$6$rounds=1234$abc"))
    for other in ("", "$1$abc$def", "$6$", "$6$rounds=x$a$b", "plain"):
        assert not HTPASSWD.verify(password, other)


def test_a_matching_hash_is_kept_and_a_changed_password_gets_a_new_one() -> None:
    first = HTPASSWD.render([{"name": "a", "password": "one"}, {"name": "b", "password": "two"}], {})
    existing = dict(line.split(":", 1) for line in first.splitlines())
    again = HTPASSWD.render([{"name": "a", "password": "one"}, {"name": "b", "password": "two"}], existing)
    assert again == first
    changed = HTPASSWD.render([{"name": "a", "password": "one"}, {"name": "b", "password": "three"}], existing)
    lines = changed.splitlines()
    assert lines[0] == first.splitlines()[0] and lines[1] != first.splitlines()[1]
    assert HTPASSWD.verify("three", lines[1].split(":", 1)[1])
    assert "one" not in first and "two" not in first


# --- the health document --------------------------------------------------------------------------------


def test_health_document_and_marker(tmp_path: Path) -> None:
    instances = [InstanceHealth(1, "comfyui-1", False, "stalled", "stalled", "GPU-b"),
                 InstanceHealth(0, "comfyui-0", True, "ready", "ready", "GPU-a")]
    document = health_document(instances, 1700000000.1234, 10.0)
    assert document["status"] == "ready" and document["ready"] == 1 and document["total"] == 2
    assert [i["path"] for i in document["instances"]] == ["/i/0/", "/i/1/"]
    assert set(document["instances"][0]) == {"instance", "name", "path", "ready", "verdict", "reason", "gpu"}
    write_health(str(tmp_path), document)
    assert (tmp_path / "ready").exists()
    assert json.loads((tmp_path / "health.json").read_text()) == document
    assert oct((tmp_path / "health.json").stat().st_mode & 0o777) == "0o644"
    down = health_document([InstanceHealth(0, "comfyui-0", False, "failed", "crashed")], 1.0, 10.0)
    write_health(str(tmp_path), down)
    assert not (tmp_path / "ready").exists() and down["status"] == "down"
    assert sorted(os.listdir(tmp_path)) == ["health.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("instances", "every", "problem"),
    [
        ([], "10s", "no --instance given"),
        (["comfyui-0"], "10s", "is not NUMBER:CONTAINER"),
        (["x:comfyui-0"], "10s", "is not NUMBER:CONTAINER"),
        (["0:../etc"], "10s", "is not a container name"),
        (["0:a", "0:b"], "10s", "given twice"),
        (["0:a", "1:a"], "10s", "given twice"),
        (["0:a"], "0s", "--every"),
        (["0:a"], "2h", "outside 1 s to 1 h"),
        (["0:a"], "nan", "--every"),
    ],
)
def test_bad_health_options(tmp_path: Path, instances: list[str], every: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem.replace(".", r"\.").replace("-", r"\-")):
        HealthOptions.parse(str(tmp_path), instances, every)


def test_the_health_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not an existing absolute directory"):
        HealthOptions.parse(str(tmp_path / "absent"), ["0:a"])
    with pytest.raises(UsageError, match="is not an existing absolute directory"):
        HealthOptions.parse("relative", ["0:a"])
    assert HealthOptions.parse(str(tmp_path), ["0:a", "1:b"]).instances == (InstanceRef(0, "a"), InstanceRef(1, "b"))


def test_an_unreachable_docker_is_not_ready(tmp_path: Path) -> None:
    client = EngineClient(f"unix://{tmp_path}/absent.sock", timeout=1.0)
    health = judge(client, InstanceRef(0, "comfyui-0"))
    assert (health.ready, health.verdict, health.reason) == (False, "unknown", "docker-unreachable")
