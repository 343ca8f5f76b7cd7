"""Properties of the fleet's parsers: whatever `--host` spec, `--run-as` identity, inventory variables,
inventory file or `--limit` pattern, the answer is a target (or an identity) that holds together, or
a UsageError (ValueError for --run-as) that says what is wrong; never another exception."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gpuhost.fleet.inventory import load_inventory, target_from_vars
from gpuhost.fleet.targets import Target, parse_host_spec, parse_ssh_args
from gpuhost.model import UsageError
from gpuhost.rules.options import MAX_ID, RunAs

# Inventory files go through Ansible's parser (a few ms each once loaded): fewer examples than the rest.
INVENTORY_EXAMPLES = max(10, settings().max_examples // 3)

HOST_CHARS = string.ascii_letters + string.digits + "-._:@[]%/ \t\n" + "é"
NAMES = st.text(alphabet=HOST_CHARS, max_size=24)
PORTS = st.integers(-5, 70000).map(str) | st.sampled_from(["", "22", "0", "65535", "65536", "+22", "٢٢", " 22"])


@st.composite
def host_specs(draw: st.DrawFn) -> str:
    """Mostly shaped like [USER@]HOST[:PORT], with every piece free to be wrong."""
    user = draw(st.none() | NAMES)
    host = draw(NAMES | NAMES.map(lambda h: f"[{h}]"))
    port = draw(st.none() | PORTS)
    return (f"{user}@" if user is not None else "") + host + (f":{port}" if port is not None else "")


def valid_target(target: Target) -> None:
    assert target.hostname and target.hostname == target.hostname.strip()
    assert target.port is None or 1 <= target.port <= 65535
    assert target.user is None or (target.user and "@" not in target.user)


@given(spec=host_specs() | st.text(max_size=30))
def test_host_spec_is_a_target_or_usage_error(spec: str) -> None:
    try:
        target = parse_host_spec(spec)
    except UsageError as exc:
        event("refused")
        assert str(exc).startswith("--host ")
        return
    event("target")
    valid_target(target)
    assert not any(c.isspace() for c in target.hostname)


@given(uid=st.integers(0, MAX_ID), gids=st.lists(st.integers(0, MAX_ID), max_size=4))
def test_run_as_round_trips(uid: int, gids: list[int]) -> None:
    text = str(uid) + (":" + ",".join(map(str, gids)) if gids else "")
    assert RunAs.parse(text) == RunAs(uid=uid, gids=gids)


@given(
    text=st.text(alphabet="0123456789:,- +_\n\u0661x", max_size=16)
    | st.lists(st.integers(-(2**40), 2**40).map(str), min_size=1, max_size=4).map(
        lambda ids: ids[0] + ":" + ",".join(ids[1:])
    )
)
def test_run_as_is_an_identity_or_value_error(text: str) -> None:
    try:
        identity = RunAs.parse(text)
    except ValueError as exc:
        event("refused")
        assert "--run-as" in str(exc)
        return
    event("identity")
    assert all(0 <= i <= MAX_ID for i in [identity.uid, *identity.gids])
    assert text.count(":") <= 1
    assert [int(i) for i in text.replace(":", ",").split(",")] == [identity.uid, *identity.gids]


VAR_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["{{ undefined_var }}", "{{ 1 / 0 }}", "{{", "{{ 22 }}", "auto", "yes", "-F", "-o", "-J a,b"]),
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
)
ANSIBLE_VARS = st.sampled_from(
    [
        "ansible_host",
        "ansible_ssh_host",
        "ansible_port",
        "ansible_ssh_port",
        "ansible_user",
        "ansible_ssh_private_key_file",
        "ansible_ssh_common_args",
        "ansible_ssh_extra_args",
        "ansible_connection",
        "ansible_python_interpreter",
        "ansible_become",
        "ansible_become_method",
        "ansible_become_user",
    ]
)


@given(name=st.text(min_size=1, max_size=12), host_vars=st.dictionaries(ANSIBLE_VARS, VAR_VALUES, max_size=6))
def test_inventory_variables_give_a_target_or_usage_error(name: str, host_vars: dict[str, Any]) -> None:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    try:
        target = target_from_vars(name, host_vars, Templar(loader=DataLoader(), variables=dict(host_vars)))
    except UsageError as exc:
        event("refused")
        assert name in str(exc)
        return
    event("unsupported" if target.unsupported else "target")
    assert target.name == name
    assert target.port is None or 1 <= target.port <= 65535


@given(text=st.text(alphabet=string.ascii_letters + " -=\"'\\FoJpli/", max_size=30))
def test_ssh_args_are_options_or_usage_error(text: str) -> None:
    try:
        config_file, options = parse_ssh_args(text, "ansible_ssh_common_args")
    except UsageError as exc:
        event("refused")
        assert "ansible_ssh_common_args" in str(exc)
        return
    event("parsed")
    assert config_file is None or isinstance(config_file, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in options.items())


HOST_ENTRIES = st.dictionaries(
    NAMES.filter(lambda n: n.strip() != ""),
    st.none() | st.dictionaries(ANSIBLE_VARS, VAR_VALUES, max_size=3),
    max_size=3,
)
INVENTORY_DOCS = st.one_of(
    st.fixed_dictionaries({"all": st.fixed_dictionaries({"hosts": HOST_ENTRIES})}),
    st.fixed_dictionaries(
        {
            "all": st.fixed_dictionaries(
                {
                    "vars": st.dictionaries(ANSIBLE_VARS, VAR_VALUES, max_size=3),
                    "children": st.dictionaries(
                        st.sampled_from(["gpu_hosts", "other", "all", "ungrouped", "bad group"]),
                        st.none() | st.fixed_dictionaries({"hosts": HOST_ENTRIES}),
                        max_size=2,
                    ),
                }
            )
        }
    ),
    st.recursive(st.none() | st.integers() | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)),
)
INVENTORY_TEXT = INVENTORY_DOCS.map(lambda doc: yaml.safe_dump(doc)) | st.text(max_size=60)
LIMITS = st.none() | st.sampled_from(
    ["all", "gpu_hosts", "gpu*", "~[", "~gpu.*", "all:!gpu_hosts", "gpu_hosts:&other", "@/nonexistent/limit", "", ":"]
) | st.text(alphabet=string.ascii_letters + "*:!&~[]@,", max_size=12)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=INVENTORY_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(text=INVENTORY_TEXT, limit=LIMITS)
def test_an_inventory_gives_targets_or_usage_error(text: str, limit: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hosts.yml"
        path.write_text(text, encoding="utf-8")
        try:
            targets = load_inventory(str(path), limit)
        except UsageError as exc:
            event("refused")
            assert str(exc)
            return
    event("targets")
    assert targets
    for target in targets:
        assert target.name
        assert target.port is None or 1 <= target.port <= 65535
