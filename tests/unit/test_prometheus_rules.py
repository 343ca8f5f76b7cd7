"""files/prometheus/gpuhost.rules.yml: valid for the distribution's promtool, every alert unit-tested
firing and not firing (files/prometheus/gpuhost.rules.test.yml), and tied to what gpuhost exports:
the finding ids it names exist in the rules registry, the Xid codes are the ones the check fails on,
and the catch-all alert leaves out exactly the ids that have their own."""

from __future__ import annotations

import re
from typing import Any

import yaml

from gpuhost.model import Severity
from gpuhost.rules.gpu import XID_MEANINGS
from tests.support.paths import REPO
from tests.support.prometheus import RULE_TESTS, RULES, promtool

CATCH_ALL = "GpuhostFailingFinding"


def alerts() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def finding_ids(expr: str) -> set[str]:
    """The finding ids an expression's `id` matchers name (a label may be matched several times)."""
    return {name for _, names in re.findall(r'\bid(=~|!~|=)"([^"]+)"', expr) for name in names.split("|")}


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = set(alerts())
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_finding_ids_in_the_rules_exist() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "gpuhost" / "rules").glob("*.py"))
    for name, rule in alerts().items():
        for finding_id in finding_ids(rule["expr"]):
            assert f'"{finding_id}"' in source, f"{name}: no rule reports {finding_id}"


def test_the_xid_alert_names_the_codes_the_check_fails_on() -> None:
    expr = alerts()["GpuhostXidNeedsReset"]["expr"]
    codes = set(re.search(r'code=~"([^"]+)"', expr).group(1).split("|"))  # type: ignore[union-attr]
    assert codes == {str(code) for code, (severity, _, _) in XID_MEANINGS.items() if severity is Severity.FAIL}


def test_the_catch_all_leaves_out_exactly_the_ids_with_their_own_alert() -> None:
    rules = alerts()
    own: set[str] = set()
    for name, rule in rules.items():
        if name != CATCH_ALL and "gpuhost_finding" in rule["expr"]:
            own |= finding_ids(rule["expr"])
    own.add("gpu.xid")  # GpuhostXidNeedsReset alerts on the Xid codes themselves
    assert finding_ids(rules[CATCH_ALL]["expr"]) == own
    assert '!~"' in rules[CATCH_ALL]["expr"]


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        assert "{{ $labels.instance }}" in rule["annotations"]["summary"], name
