"""files/prometheus/prometheus.yml finds the hosts the Ansible inventory finds, loads the rules the
role's hosts are alerted by, passes promtool, and docs/monitoring.md shows it and its IAM policy as
they are."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.paths import REPO
from tests.support.prometheus import promtool

CONFIG = REPO / "files" / "prometheus" / "prometheus.yml"
POLICY = REPO / "files" / "iam" / "gpuhost-prometheus-ec2-sd.json"
DOC = REPO / "docs" / "monitoring.md"


def test_the_scrape_config_selects_the_inventory_tag_and_state() -> None:
    inventory = yaml.safe_load((REPO / "inventories" / "aws" / "aws_ec2.yml").read_text())
    sd = yaml.safe_load(CONFIG.read_text())["scrape_configs"][0]["ec2_sd_configs"][0]
    filters = {f["name"]: f["values"] for f in sd["filters"]}
    assert filters == {name: [value] for name, value in inventory["filters"].items()}
    assert sd["region"] in inventory["regions"]
    assert sd["port"] == 9100  # roles/gpuhost_metrics' default listen address


def test_the_scrape_config_loads_the_rules_and_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert [p.rsplit("/", 1)[1] for p in config["rule_files"]] == ["gpuhost.rules.yml"]
    local = tmp_path / "prometheus.yml"
    config["rule_files"] = [str(REPO / "files" / "prometheus" / "gpuhost.rules.yml")]
    local.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_monitoring_page_shows_the_config_and_policy_as_they_are() -> None:
    page = DOC.read_text()
    assert "```yaml\n" + CONFIG.read_text().split("---\n", 1)[1] + "```" in page
    assert "```json\n" + POLICY.read_text() + "```" in page
