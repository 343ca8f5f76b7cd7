"""The comfyui_door role alone on this machine, its files under a test directory and nginx not started
(`comfyui_door_manage_service: false`): bad variables refused before anything changes and without
repeating a secret; check mode writes nothing; `-v --diff` shows no secret; a second run changes
nothing, a changed password changes its hash only; a certificate of one's own is installed 0600; what it
renders passes `nginx -t` (Debian's nginx). tests/roles/test_serving_live.py runs it in front of real
instances."""

from __future__ import annotations

import datetime
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ansible import PlaybookRun, local_play, run_playbook
from tests.support.serving import main_conf, nginx_test

pytestmark = [pytest.mark.slow]

TOKEN = "door-role-token-4f1e2d3c4b5a69788796a5b4c3d2e1f0"
PASSWORD = "door role: pässword"
PLAYBOOK = local_play("The front door alone", "comfyui_door")
INSTANCES = [{"name": "comfyui-0", "number": 0, "host_port": 18188, "address": "127.0.0.1"},
             {"name": "comfyui-1", "number": 1, "host_port": 18189, "address": "::1"}]


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gpuhost-door-role-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def variables(work: Path, **more: Any) -> dict[str, Any]:
    return {
        "comfyui_door_instances": INSTANCES,
        "comfyui_door_token": TOKEN,
        "comfyui_door_users": [{"name": "alice", "password": PASSWORD}],
        "comfyui_door_config_dir": str(work / "conf.d"),
        "comfyui_door_secrets_dir": str(work / "secrets"),
        "comfyui_door_state_dir": str(work / "state"),
        "comfyui_door_log_dir": str(work / "log"),
        "comfyui_door_unit_dir": str(work / "systemd"),
        "comfyui_door_manage_service": False,
        "comfyui_door_disable_default_site": False,
        "gpuhost_agent_path": str(work / "agent" / "gpuhost-agent.pyz"),
        "gpuhost_agent_bin": str(work / "agent" / "gpuhost-agent"),
        "gpuhost_agent_python": sys.executable,
        **more,
    }


def play(work: Path, values: dict[str, Any], *extra: str) -> PlaybookRun:
    for folder in ("conf.d", "log", "systemd"):
        (work / folder).mkdir(exist_ok=True)
    return run_playbook(work, PLAYBOOK, "-i", "localhost,", "-e", json.dumps(values), *extra)


def secrets_absent(run: PlaybookRun, *secrets: str) -> None:
    for secret in (TOKEN, PASSWORD, *secrets):
        assert secret not in run.output


@pytest.mark.parametrize(
    ("more", "message"),
    [
        ({"comfyui_door_token": "", "comfyui_door_users": []}, "the door needs credentials"),
        ({"comfyui_door_token": "short"}, "comfyui_door_token must be 16 to 4096 characters"),
        ({"comfyui_door_token": TOKEN + '" off; default off; "'}, "comfyui_door_token must be"),
        ({"comfyui_door_users": [{"name": "al:ice", "password": PASSWORD}]}, "the name must be 1 to 64"),
        ({"comfyui_door_users": [{"name": "alice", "password": ""}]}, "the password is empty"),
        ({"comfyui_door_bind_address": "0.0.0.0"}, "(not loopback) needs comfyui_door_expose: true"),
        ({"comfyui_door_bind_address": "0.0.0.0", "comfyui_door_expose": True, "comfyui_door_tls": False},
         "(not loopback) needs TLS"),
        ({"comfyui_door_bind_address": "localhost"}, "is not an IP address"),
        ({"comfyui_door_port": 70000}, "is outside 1 to 65535"),
        ({"comfyui_door_instances": []}, "comfyui_door_instances is empty"),
        ({"comfyui_door_header_timeout": "15 s"}, "is not a duration"),
        ({"comfyui_door_max_upload": "100MB"}, "is not a size"),
        ({"comfyui_door_state_dir": "/var/lib/../etc"}, "is not an absolute path"),
        ({"comfyui_door_tls_certificate": "-----BEGIN CERTIFICATE-----\nx\n"}, "go together"),
        ({"comfyui_door_tls_names": ["gpu 01"]}, "is neither a host name nor an IP address"),
        ({"comfyui_door_tls_days": 0}, "comfyui_door_tls_days is a whole number"),
    ],
    ids=lambda v: ascii(v)[:50],
)
def test_bad_variables_stop_before_anything_changes(work: Path, more: dict[str, Any], message: str) -> None:
    run = play(work, variables(work, **more))
    assert run.returncode == 2, run.output[-3000:]
    assert message in run.flat, run.output[-3000:]
    assert run.recap()["changed"] == 0
    assert not (work / "secrets").exists() and not (work / "agent").exists()
    secrets_absent(run, '" off; default off; "')


def test_check_mode_writes_nothing_and_shows_no_secret(work: Path) -> None:
    run = play(work, variables(work), "--check", "--diff", "-v")
    assert run.returncode == 0, run.output[-5000:]
    assert run.recap()["changed"] > 0
    secrets_absent(run)
    assert not (work / "secrets").exists() and list((work / "conf.d").iterdir()) == []


def test_a_run_writes_the_door_a_second_changes_nothing_a_new_password_changes_its_hash(work: Path) -> None:
    first = play(work, variables(work), "--diff", "-v")
    assert first.returncode == 0, first.output[-5000:]
    secrets_absent(first)
    secrets = work / "secrets"
    modes = {p.name: p.stat().st_mode & 0o777 for p in secrets.iterdir()}
    assert modes == {"comfyui-door-auth.conf": 0o600, "comfyui-door.htpasswd": 0o640,
                     "comfyui-door-selfsigned.crt": 0o644, "comfyui-door-selfsigned.key": 0o600}
    assert secrets.stat().st_mode & 0o777 == 0o750
    tested = nginx_test(main_conf(work / "ngx", work / "conf.d"))
    assert tested.returncode == 0, tested.stderr
    rendered = (work / "conf.d" / "gpuhost-comfyui-door.conf").read_text()
    assert TOKEN not in rendered and "server [::1]:18189" in rendered and "location /i/1/" in rendered
    hashes = (secrets / "comfyui-door.htpasswd").read_text()

    again = play(work, variables(work), "--diff")
    assert again.returncode == 0 and again.recap()["changed"] == 0, again.output[-5000:]
    assert (secrets / "comfyui-door.htpasswd").read_text() == hashes

    changed = play(work, variables(work, comfyui_door_users=[{"name": "alice", "password": PASSWORD + "2"}]),
                   "--diff", "-v")
    assert changed.returncode == 0, changed.output[-5000:]
    secrets_absent(changed, PASSWORD + "2")
    assert changed.recap()["changed"] == 1  # the users file, nothing else
    assert (secrets / "comfyui-door.htpasswd").read_text() != hashes


def test_a_certificate_of_ones_own_is_installed_and_nginx_takes_it(work: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-01.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    run = play(work, variables(work, comfyui_door_tls_certificate=cert_pem, comfyui_door_tls_key=key_pem),
               "--diff", "-v")
    assert run.returncode == 0, run.output[-5000:]
    secrets_absent(run, key_pem.splitlines()[1])
    secrets = work / "secrets"
    assert (secrets / "comfyui-door.key").read_text() == key_pem
    assert (secrets / "comfyui-door.key").stat().st_mode & 0o777 == 0o600
    assert not (secrets / "comfyui-door-selfsigned.key").exists()
    assert f"ssl_certificate {secrets}/comfyui-door.crt;" in (work / "conf.d" / "gpuhost-comfyui-door.conf").read_text()
    tested = nginx_test(main_conf(work / "ngx", work / "conf.d"))
    assert tested.returncode == 0, tested.stderr


def test_plain_http_on_loopback_and_only_a_token(work: Path) -> None:
    run = play(work, variables(work, comfyui_door_tls=False, comfyui_door_users=[]))
    assert run.returncode == 0, run.output[-5000:]
    rendered = (work / "conf.d" / "gpuhost-comfyui-door.conf").read_text()
    assert "ssl_certificate" not in rendered and "Secure" not in rendered
    assert (work / "secrets" / "comfyui-door.htpasswd").read_text() == ""  # no user can log in
    assert nginx_test(main_conf(work / "ngx", work / "conf.d")).returncode == 0
