"""files/prometheus/prometheus.yml's EC2 discovery, run by the distribution's Prometheus against moto's
EC2 on loopback: it finds the running instances tagged gpuhost=true (as inventories/aws does) and no
other, names them as the inventory does, and calls exactly the actions files/iam/gpuhost-prometheus-ec2-sd.json
grants. Every target's address is rewritten to a closed loopback port before any scrape: nothing is sent
to the instances' private addresses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.aws import Ec2Server
from tests.support.paths import REPO
from tests.support.prometheus import Prometheus, free_port, program, promtool, wait_until

CONFIG = REPO / "files" / "prometheus" / "prometheus.yml"
POLICY = REPO / "files" / "iam" / "gpuhost-prometheus-ec2-sd.json"


def granted() -> set[str]:
    document = json.loads(POLICY.read_text())
    assert document["Version"] == "2012-10-17"
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Resource"] == "*", statement
        names = statement["Action"]
        actions.update([names] if isinstance(names, str) else names)
    return actions


def run_instance(client: Any, tags: dict[str, str]) -> dict[str, Any]:
    image = client.describe_images()["Images"][0]["ImageId"]
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    answer = client.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g6e.xlarge",
                                  TagSpecifications=spec)
    return dict(answer["Instances"][0])


def test_discovery_finds_the_tagged_fleet_with_the_policy_actions(
    tmp_path: Path, ec2_server: Ec2Server, aws_env: dict[str, str]
) -> None:
    server = ec2_server
    client = server.client()
    tagged = run_instance(client, {"gpuhost": "true", "Name": "gpu-metrics-01"})
    unnamed = run_instance(client, {"gpuhost": "true"})
    stopped = run_instance(client, {"gpuhost": "true", "Name": "gpu-metrics-stopped"})
    client.stop_instances(InstanceIds=[stopped["InstanceId"]])
    other = run_instance(client, {"Name": "web-01"})
    mine = [i["InstanceId"] for i in (tagged, unnamed, stopped, other)]
    config = yaml.safe_load(CONFIG.read_text())
    job = config["scrape_configs"][0]
    sd = job["ec2_sd_configs"][0]
    sd.update(endpoint=server.endpoint, access_key="testing", secret_key="testing", refresh_interval="2s")
    # never scrape the private addresses moto made up: a closed loopback port instead, before any scrape
    job["relabel_configs"].append({"target_label": "__address__", "replacement": f"127.0.0.1:{free_port()}"})
    job["scrape_interval"] = "1h"
    config["rule_files"] = [str(REPO / "files" / "prometheus" / "gpuhost.rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    checked = promtool("check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [program("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address={address}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        with server.recording() as actions:
            prometheus = Prometheus(address)

            def discovered() -> list[dict[str, Any]]:
                targets = prometheus.api("/api/v1/targets")["activeTargets"]
                return [t for t in targets if t["discoveredLabels"].get("__meta_ec2_instance_id") in mine]

            targets = wait_until("the tagged instances discovered", lambda: len(discovered()) == 2 and discovered(),
                                 90)
            # a second refresh: the calls of one refresh, repeated, are all it makes
            refreshes = len(server.actions())
            wait_until("another refresh", lambda: len(server.actions()) > refreshes, 30)
        by_id = {t["discoveredLabels"]["__meta_ec2_instance_id"]: t for t in targets}
        assert set(by_id) == {tagged["InstanceId"], unnamed["InstanceId"]}
        named = by_id[tagged["InstanceId"]]
        assert named["labels"]["instance"] == "gpu-metrics-01"
        assert named["labels"]["gpuhost"] == "true"
        assert named["labels"]["instance_type"] == "g6e.xlarge"
        assert named["labels"]["job"] == "gpuhost"
        assert named["discoveredLabels"]["__meta_ec2_private_ip"] == tagged["PrivateIpAddress"]
        for target in targets:  # what would be scraped: the loopback stand-in, never the made-up address
            assert target["scrapeUrl"].startswith("http://127.0.0.1:"), target["scrapeUrl"]
        assert by_id[unnamed["InstanceId"]]["labels"]["instance"] == unnamed["InstanceId"]
        called = {f"ec2:{action}" for action in actions}
        assert called == granted(), f"Prometheus called {sorted(called)}; the policy grants {sorted(granted())}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        client.terminate_instances(InstanceIds=mine)
