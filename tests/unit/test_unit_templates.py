"""Every role's systemd unit template, rendered with hostile values (newlines, quotes, backslashes, `%`, `$`,
`;`, spaces, unicode, leading `-@+!`): each variable stays one value, in the setting it was written in, or the
value is refused with a message before anything is written. Nothing else: no added directive, section or
command, no specifier or variable reference that systemd would expand.

The oracle: the same template rendered with placeholders, read back, and each placeholder replaced by the
value it stands for. The reader is a port of systemd's parser (tests/support/systemd_units.py); the tests
at the end run systemd's own parser (`systemd-analyze verify`) on hostile values and show both agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import example, given
from hypothesis import strategies as st

from gpuhost.storage.plan import mount_unit_name
from tests.support.role_templates import ROLES, render, systemd_filters, unit_templates
from tests.support.systemd_units import (
    SYSTEMD_ANALYZE,
    analyze,
    parse_environment_file,
    resolve_variables,
    unit_meanings,
)

# --- what each template takes ------------------------------------------------------------------------
# kinds: "program" a command line's program, "path" an absolute path (Where=, ConditionPathExists=, ...),
# "value" text written as it is (Description=, What=, ...), "word" one command-line argument,
# "unit" a unit name
# values that are paths by meaning, though written as part of something else: drawn as absolute paths, so
# that one variable shared by two templates (gpuhost_metrics_textfile_directory) holds one value in both
PATH_SHAPED = ("mount_path", "textfile_directory")


@dataclass(frozen=True)
class Case:
    template: str
    kinds: dict[str, str]
    variables: Callable[[dict[str, str]], dict[str, Any]]
    file_name: Callable[[dict[str, str]], str]

    @property
    def id(self) -> str:
        return Path(self.template).name


def _ebs_service(v: dict[str, str]) -> dict[str, Any]:
    return {
        "gpuhost_agent_bin": v["agent"], "ebs_tuning_environment_file": v["env_file"],
        "__ebs_tuning_host_selection": ["--volume-id", v["volume"]], "ebs_tuning_region": v["region"],
        "ebs_tuning_endpoint_url": v["endpoint"], "ebs_tuning_image": v["image"],
    }


def _models_sync(v: dict[str, str]) -> dict[str, Any]:
    return {
        "__comfyui_models_directory": v["directory"], "__comfyui_models_hf_dir": v["hf_dir"],
        "__comfyui_models_manifest_path": v["manifest"], "__comfyui_models_record": v["record"],
        "__comfyui_uid": "4242", "__comfyui_gid": "4243", "gpuhost_agent_bin": v["agent"],
        "comfyui_models_source": v["source"], "__comfyui_models_options": [v["option0"], v["option1"]],
        "comfyui_models_boot_timeout": v["timeout"],
    }


def _storage_service(v: dict[str, str]) -> dict[str, Any]:
    return {
        "__docker_storage_plan": {"mount_path": v["mount_path"], "mount_unit": v["mount_unit"]},
        "__docker_storage_config_path": v["config"], "gpuhost_agent_bin": v["agent"],
        "docker_storage_missing_disk_policy": "fail", "docker_storage_device_timeout": 90,
    }


CASES = [
    Case(
        "ebs_tuning/templates/gpuhost-ebs-revert.service.j2",
        {"agent": "program", "env_file": "path", "volume": "word", "region": "word", "endpoint": "word",
         "image": "word"},
        _ebs_service, lambda v: "gpuhost-ebs-revert.service",
    ),
    Case(
        "ebs_tuning/templates/gpuhost-ebs-revert.timer.j2", {"interval": "value"},
        lambda v: {"ebs_tuning_revert_check_interval": v["interval"]}, lambda v: "gpuhost-ebs-revert.timer",
    ),
    Case(
        "comfyui/templates/gpuhost-models-sync.service.j2",
        {"directory": "path", "hf_dir": "path", "manifest": "path", "record": "word", "agent": "program",
         "source": "word", "option0": "word", "option1": "word", "timeout": "value"},
        _models_sync, lambda v: "gpuhost-models-sync.service",
    ),
    Case(
        "comfyui_door/templates/gpuhost-door-health.service.j2",
        {"state": "path", "agent": "program", "interval": "word", "instance0": "word", "instance1": "word"},
        lambda v: {"comfyui_door_state_dir": v["state"], "gpuhost_agent_bin": v["agent"],
                   "comfyui_door_health_interval": v["interval"],
                   "__comfyui_door_instance_args": [v["instance0"], v["instance1"]]},
        lambda v: "gpuhost-door-health.service",
    ),
    Case(
        "docker_storage/templates/docker-storage.mount.j2", {"source": "value", "mount_path": "path"},
        lambda v: {"__docker_storage_plan": {"mount_source": v["source"], "mount_path": v["mount_path"]},
                   "__docker_storage_service": "gpuhost-docker-storage.service"},
        lambda v: mount_unit_name(v["mount_path"]),
    ),
    Case(
        "docker_storage/templates/gpuhost-docker-storage.service.j2",
        {"mount_path": "value", "mount_unit": "unit", "agent": "program", "config": "path"},
        _storage_service, lambda v: "gpuhost-docker-storage.service",
    ),
    Case(
        "nvidia_container_toolkit/templates/gpuhost-cdi-generate.service.j2", {"spec": "value"},
        lambda v: {"nvidia_container_toolkit_cdi_fallback_spec": v["spec"]}, lambda v: "gpuhost-cdi-generate.service",
    ),
    Case(
        "gpuhost_metrics/templates/gpuhost-metrics.service.j2", {"agent": "program", "directory": "path",
                                                                  "arg0": "word", "arg1": "word"},
        lambda v: {"gpuhost_agent_bin": v["agent"], "gpuhost_metrics_textfile_directory": v["directory"],
                   "gpuhost_metrics_check_args": [v["arg0"], v["arg1"]]},
        lambda v: "gpuhost-metrics.service",
    ),
    Case(
        "gpuhost_metrics/templates/gpuhost-metrics.timer.j2", {"interval": "value"},
        lambda v: {"gpuhost_metrics_interval": v["interval"]}, lambda v: "gpuhost-metrics.timer",
    ),
    # a drop-in of node_exporter's unit: verified as a service of its own
    Case(
        "gpuhost_metrics/templates/node-exporter-gpuhost.conf.j2", {"agent": "program", "textfile_directory": "word",
                                                                     "listen": "word"},
        lambda v: {"__gpuhost_metrics_binary": v["agent"], "__gpuhost_metrics_pass_args": True,
                   "gpuhost_metrics_textfile_directory": v["textfile_directory"],
                   "gpuhost_metrics_node_exporter_listen_address": v["listen"]},
        lambda v: "node-exporter-gpuhost.service",
    ),
]


def test_every_unit_template_has_a_case() -> None:
    assert sorted(c.template for c in CASES) == sorted(str(t.relative_to(ROLES)) for t in unit_templates())


@pytest.mark.parametrize("template", unit_templates(), ids=lambda t: t.name)
def test_every_value_in_a_unit_template_goes_through_a_systemd_filter(template: Path) -> None:
    """Only `# {{ ansible_managed }}` (Ansible's header, a comment) is written as it is."""
    source = template.read_text(encoding="utf-8")
    expressions = re.findall(r"{{(.*?)}}", source, flags=re.DOTALL)
    assert expressions
    unfiltered = [e.strip() for e in expressions
                  if e.strip() != "ansible_managed" and not re.search(r"\|\s*systemd_\w+(\([^()]*\))?\s*$", e.strip())]
    assert not unfiltered, unfiltered
    assert "{{ ansible_managed }}" not in source.replace("# {{ ansible_managed }}", "")


def _tasks(path: Path) -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(path.read_text(encoding="utf-8")) or [])


def _flat(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for task in tasks:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out.extend(_flat(task.get(key) or []))
    return out


def _loads_agent(task: dict[str, Any]) -> bool:
    include = task.get("ansible.builtin.include_role") or task.get("ansible.builtin.import_role") or {}
    return include.get("name") == "gpuhost_agent" and "tasks_from" not in include


def _renders(task: dict[str, Any], template: str) -> bool:
    source = (task.get("ansible.builtin.template") or {}).get("src", "")
    loop = task.get("loop") or []
    return source == template or (source == "{{ item }}.j2" and template[: -len(".j2")] in loop) or (
        source == "{{ item.name }}.j2" and any(template[: -len(".j2")] == i.get("name") for i in loop))


@pytest.mark.parametrize("template", unit_templates(), ids=lambda t: t.name)
def test_each_role_loads_gpuhost_agent_before_it_writes_a_unit(template: Path) -> None:
    """The systemd_* filters come with gpuhost_agent: a role that writes a unit depends on it in
    meta/main.yml, or includes it earlier in the task file that writes the unit, or in main.yml before
    it includes that file."""
    import yaml

    role = template.parent.parent
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text(encoding="utf-8"))
    if any((d if isinstance(d, str) else d.get("role")) == "gpuhost_agent" for d in meta.get("dependencies") or []):
        return
    main = _flat(_tasks(role / "tasks" / "main.yml"))
    for path in sorted((role / "tasks").glob("*.yml")):
        tasks = _flat(_tasks(path))
        writes = [i for i, t in enumerate(tasks) if _renders(t, template.name)]
        if not writes:
            continue
        if any(_loads_agent(t) for t in tasks[: writes[0]]):
            break
        included_at = [i for i, t in enumerate(main) if (t.get("ansible.builtin.include_tasks") == path.name)]
        assert included_at and any(_loads_agent(t) for t in main[: included_at[0]]), (
            f"{path.relative_to(ROLES)} writes {template.name} without gpuhost_agent loaded before it")
        break
    else:
        pytest.fail(f"no task of {role.name} writes {template.name}")


# --- placeholders, hostile values and the verdict ----------------------------------------------------


def placeholders(case: Case) -> dict[str, str]:
    """A plain stand-in for each variable, of its kind (paths absolute, unit names with a suffix)."""
    out = {}
    for index, (name, kind) in enumerate(case.kinds.items()):
        out[name] = {"path": f"/stand{index}in", "program": f"/stand{index}in", "unit": f"stand{index}in.mount"}.get(
            kind, f"stand{index}in")
    return out


def substitute(meaning: object, replacements: dict[str, str]) -> object:
    """The meaning with every stand-in replaced by its value, in one pass (a value is never replaced again)."""
    pattern = re.compile("|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True)))
    if isinstance(meaning, str):
        return pattern.sub(lambda m: replacements[m.group(0)], meaning)
    if isinstance(meaning, tuple):
        return tuple(substitute(part, replacements) for part in meaning)
    return meaning


def refusable(kind: str, value: str) -> bool:
    """What systemd cannot carry as one value of this kind: the filters must refuse exactly these."""
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return True
    if kind == "unit":
        return len(value) > 255
    if kind in ("path", "program", "value") and (value != value.strip(" \t") or value.endswith("\\")):
        return True
    if kind == "program" and any(c in value for c in "\"'\\$"):  # systemd: "contains special characters"
        return True
    return kind in ("path", "program") and (not value.startswith("/") or ".." in value.split("/"))


HOSTILE = "\n\r\t\x00\x0b\x1b\x7f\x85\u2028 \"'\\%$;#=[]{}()-@+!:|&<>*?~`,.é☃\U0001f600aZ09"
hostile_text = st.one_of(
    st.text(alphabet=HOSTILE, min_size=1, max_size=16),
    st.text(min_size=1, max_size=12),
    st.builds(lambda lead, rest: lead + rest, st.sampled_from("-@+!:|;"), st.text(alphabet=HOSTILE, max_size=8)),
)
_component = st.text(alphabet=HOSTILE.replace("/", ""), min_size=1, max_size=10).filter(lambda c: c != ".")
hostile_path = st.lists(_component, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))


def draw_values(case: Case, data: st.DataObject) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, kind in case.kinds.items():
        if kind == "unit":
            continue
        path = kind in ("path", "program") or name in PATH_SHAPED
        values[name] = data.draw(hostile_path if path else hostile_text, label=name)
    if "mount_unit" in case.kinds:  # what the plan names it
        values["mount_unit"] = mount_unit_name(values["mount_path"])
    return values


def check_case(case: Case, values: dict[str, str]) -> str | None:
    """Render with `values`: refused exactly when a value cannot be one value of its kind; otherwise read
    back as the placeholder rendering with the values in place. The rendered unit, or None when refused."""
    stand_ins = placeholders(case)
    expected = substitute(unit_meanings(render(case.template, **case.variables(stand_ins))),
                          {stand_ins[name]: values[name] for name in case.kinds})
    should_refuse = any(refusable(kind, values[name]) for name, kind in case.kinds.items())
    try:
        rendered = render(case.template, **case.variables(values))
    except AnsibleFilterError as exc:
        assert should_refuse, f"refused a value systemd can carry: {exc}"
        assert "cannot write" in str(exc)
        return None
    assert not should_refuse, f"wrote a value systemd cannot carry as one value:\n{rendered}"
    assert unit_meanings(rendered) == expected, rendered
    return rendered


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@given(data=st.data())
def test_each_variable_stays_one_value_in_its_setting(case: Case, data: st.DataObject) -> None:
    check_case(case, draw_values(case, data))


# the hostile values the issue names, each in every variable of every template
CORPUS = [
    "plain", "two words", "new\nline", "carriage\rreturn", "tab\tbed", "nul\x00byte", 'double"quote', "single'quote",
    "back\\slash", "trailing\\", "100%", "%h%n%%", "$HOME", "${HOME}", "$$", "semi;colon", ";", "\\;", " lead",
    "trail ", "é☃\U0001f600", "-dash", "@at", "+plus", "!bang", "!!bang", ":colon", "#hash", "[Service]",
    "x\nExecStartPost=/bin/rm -rf /", "a\\\nb",
]


def corpus_values(case: Case, text: str) -> dict[str, str]:
    values = {name: ("/srv/" + text if kind in ("path", "program") or name in PATH_SHAPED else text)
              for name, kind in case.kinds.items() if kind != "unit"}
    if "mount_unit" in case.kinds:
        values["mount_unit"] = mount_unit_name(values["mount_path"])
    return values


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("text", CORPUS, ids=ascii)
def test_the_named_hostile_values(case: Case, text: str) -> None:
    check_case(case, corpus_values(case, text))


# --- the filters on their own ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["/usr/bin/x", "a b", "%h", "$HOME", ";", "", 'q"\\'], '/usr/bin/x "a b" "%%h" "$$HOME" ";" "" "q\\"\\\\"'),
        (["/usr/bin/x", "--output=/etc/cdi/nvidia.yaml", "-@+"], "/usr/bin/x --output=/etc/cdi/nvidia.yaml -@+"),
        (["/opt/my tool/bin", 4242], '"/opt/my tool/bin" 4242'),
    ],
)
def test_systemd_exec_quotes_what_needs_it(argv: list[object], line: str) -> None:
    assert systemd_filters().systemd_exec(argv) == line


@pytest.mark.parametrize(
    ("paths", "prefix", "line"),
    [
        (["/var/lib/x"], "", "/var/lib/x"),
        (["/var/lib/x", "/srv/two words"], "-", '-/var/lib/x "-/srv/two words"'),
        (["/srv/100%"], "-", "\"-/srv/100%%\""),
        (['/srv/q"'], "+", '"+/srv/q\\""'),
    ],
)
def test_systemd_paths_puts_the_prefix_inside_the_quotes(paths: list[str], prefix: str, line: str) -> None:
    assert systemd_filters().systemd_paths(paths, prefix) == line


@pytest.mark.parametrize("prefix", ["!", "--", " -", "-\n", "~"], ids=ascii)
def test_systemd_paths_refuses_other_prefixes(prefix: str) -> None:
    with pytest.raises(AnsibleFilterError, match="the prefix"):
        systemd_filters().systemd_paths(["/var/lib/x"], prefix)


@pytest.mark.parametrize(
    "argv",
    [[], "/usr/bin/x", ["-/usr/bin/x"], ["@/usr/bin/x"], ["usr/bin/x"], ["/usr/../bin/x"], ["/usr//bin/x"],
     ["/usr/bin/x", "a\nb"], ["/usr/bin/x", None], ["/usr/bin/x", True], ["/usr/bin/x", {"a": 1}],
     ["/opt/o'brien/x"], ['/opt/"q"/x'], ["/opt/back\\slash/x"], ["/opt/$HOME/x"]],
    ids=ascii,
)
def test_systemd_exec_refuses_what_systemd_would_read_otherwise(argv: object) -> None:
    with pytest.raises(AnsibleFilterError, match="cannot write"):
        systemd_filters().systemd_exec(argv)


def test_paths_are_normalised_as_systemd_normalises_them() -> None:
    filters = systemd_filters()
    assert filters.systemd_path("//mnt/./docker/") == "/mnt/docker"
    assert filters.systemd_path("/mnt/100%") == "/mnt/100%%"
    assert filters.systemd_paths(["/a b", "/c"]) == '"/a b" /c'
    with pytest.raises(AnsibleFilterError, match=re.escape("through '..'")):
        filters.systemd_path("/mnt/../etc")
    with pytest.raises(AnsibleFilterError, match="absolute path"):
        filters.systemd_path("mnt/docker")


@pytest.mark.parametrize("name", ["", "docker", "docker.servic", "a b.service", "a%b.mount", "x" * 250 + ".mount",
                                  "a\nb.service"], ids=ascii)
def test_unit_names_are_checked(name: str) -> None:
    with pytest.raises(AnsibleFilterError):
        systemd_filters().systemd_unit_name(name)
    assert systemd_filters().systemd_unit_name("data-fast\\x2ddisk.mount") == "data-fast\\x2ddisk.mount"


# --- EnvironmentFile= ------------------------------------------------------------------------------------

env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)


@given(st.dictionaries(env_names, st.one_of(hostile_text, st.text(max_size=8)), max_size=5))
@example({"AWS_SECRET_ACCESS_KEY": 'a"b\\c$d`e %h', "EMPTY": "", "SPACES": "  x  "})
@example({"A": "x\nB=injected"})
def test_an_environment_file_gives_each_variable_its_value(variables: dict[str, str]) -> None:
    refused = any(refusable("word", v) for v in variables.values())
    try:
        text = systemd_filters().systemd_environment_file(variables)
    except AnsibleFilterError as exc:
        assert refused
        # a value may be a secret: the message names the variable and the offending character, nothing else
        assert re.fullmatch(r"cannot write the environment variable \w+: it holds the control character "
                            r"'\\?[^']{1,9}' \(a newline, tab, NUL, \.\.\.\)", str(exc)), str(exc)
        return
    assert not refused
    assert parse_environment_file(text) == list(variables.items())


@pytest.mark.parametrize("variables", [{"1A": "x"}, {"A-B": "x"}, {"A B": "x"}, {"A=": "x"}, {"A": None},
                                       {"A": ["x"]}, ["A=x"]], ids=ascii)
def test_an_environment_file_refuses_bad_names_and_values(variables: object) -> None:
    with pytest.raises(AnsibleFilterError):
        systemd_filters().systemd_environment_file(variables)


# --- systemd's own parser ----------------------------------------------------------------------------

needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


def _dumped(key: str, value: object) -> object:
    """A meaning in the form systemd-analyze's dump shows it."""
    if key.startswith("Condition") and isinstance(value, tuple):
        return f"{value[0]}{value[1]} untested"
    if key == "EnvironmentFile" and isinstance(value, tuple):
        return f"{value[0]}{value[1]}"
    return value


TIME_SPANS = {"interval": "1h 30min", "timeout": "10m"}


@needs_systemd_analyze
@pytest.mark.parametrize("text", [t for t in CORPUS if t.isprintable()], ids=ascii)
def test_systemd_reads_every_unit_as_written(text: str, tmp_path: Path) -> None:
    """Each template rendered with the hostile value (the program a real executable at a hostile path),
    loaded by systemd-analyze verify: no warning, and every setting's value is what the port reads."""
    written: dict[Path, tuple[Case, str]] = {}
    for case in CASES:
        # systemd time spans: the roles' asserts let through only these (digits, units, spaces)
        values = {**corpus_values(case, text), **{k: v for k, v in TIME_SPANS.items() if k in case.kinds}}
        if "agent" in values:  # a program verify can find; one systemd refuses is tested above
            program = str(tmp_path / "bin" / text)
            values["agent"] = "/usr/bin/true" if "/" in text or refusable("program", program) else program
        rendered = check_case(case, values)
        if rendered is None:
            continue
        if "agent" in values and values["agent"] != "/usr/bin/true":
            program = Path(values["agent"])
            program.parent.mkdir(exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
        path = tmp_path / case.file_name(values)
        path.write_text(rendered, encoding="utf-8")
        written[path] = (case, rendered)
    assert written, "every template refused a value without control characters"
    # systemd-analyze verify reads FILE:ALIAS on its command line: a unit named with a colon is loaded
    # from the directory instead, and only what the others' dependencies pull in
    written = {path: unit for path, unit in written.items() if ":" not in path.name}
    analysis = analyze(list(written))
    # the only message allowed: verify looks for the programs, and this machine may lack nvidia-ctk
    allowed = set() if Path("/usr/bin/nvidia-ctk").exists() else {
        "gpuhost-cdi-generate.service: Command /usr/bin/nvidia-ctk is not executable: No such file or directory"}
    assert set(analysis.messages) <= allowed, "\n".join(analysis.messages)
    assert analysis.returncode == (1 if analysis.messages else 0)
    for path, (_, rendered) in written.items():
        dumped = analysis.units[path.name]
        for _, key, value in unit_meanings(rendered):
            if key in ("Description", "Where", "What", "EnvironmentFile") or key.startswith("Condition"):
                assert dumped.get(key) == [_dumped(key, value)], (key, dumped.get(key))
            elif key == "RequiresMountsFor":
                assert {f"{p} (origin-file)" for p in value} <= set(dumped.get(key))  # type: ignore[union-attr]
            elif key.startswith("Exec") and "<%" not in str(value) and value:  # `ExecStart=` alone resets
                commands = [tuple(map(resolve_variables, argv)) for argv in dumped.commands[key]]
                assert commands == [argv for _, argv in value]  # type: ignore[union-attr]
