"""The JSON that other programs read, pinned: `storage plan --json` (the docker_storage role reads it)
and the parts of `check --json` that the package collectors fill. A change to these files is a change
of the output: make it on purpose, with the docs, and write the pins again with
`python -m tests.unit.test_output_pins`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuhost.check import report_for
from gpuhost.facts.packages import collect_packages
from gpuhost.facts.signatures import Signature
from gpuhost.facts.toolkit import collect_toolkit
from gpuhost.model import to_jsonable
from gpuhost.rules import RuleOptions
from gpuhost.storage.plan import StorageRequest, plan_storage
from tests.support.paths import FIXTURES
from tests.support.recorded_facts import DRIFT, seed_facts
from tests.unit.test_storage_plan import TWELVE, XFS_USERDATA, XLARGE, probe_with

PINS = FIXTURES / "pinned"
GPT = Signature("gpt", "partition-table", ["blkid"])


def storage_plans() -> dict[str, Any]:
    """Each way a disk can come out of a plan: accepted, refused (forceable or not), forced, no whole disk."""
    cases = {
        "g6e-xlarge-instance-store": (StorageRequest(), XLARGE, {}),
        "g6e-xlarge-root-volume-forced": (
            StorageRequest(devices=["/dev/nvme0n1"], force=["/dev/nvme0n1"]), XLARGE, {"nvme0n1": [GPT]}
        ),
        "g6e-xlarge-partition": (StorageRequest(devices=["/dev/nvme0n1p15"]), XLARGE, {}),
        "g6e-12xlarge-raid0-one-forced": (
            StorageRequest(devices=["/dev/nvme0n1", "/dev/nvme2n1"], force=["/dev/nvme0n1"]),
            TWELVE,
            {"nvme0n1": [XFS_USERDATA]},
        ),
    }
    return {
        name: plan_storage(request, str(tree), probe_with(signatures)).to_dict()
        for name, (request, tree, signatures) in cases.items()
    }


def check_output() -> dict[str, Any]:
    """What check reports of the p5 tree's dpkg database, and the keys of the report around it."""
    facts = seed_facts()
    facts.packages = collect_packages(str(DRIFT))
    facts.toolkit = collect_toolkit(str(DRIFT), path="/usr/bin")
    report = report_for(facts, RuleOptions()).to_dict()
    text = json.dumps({
        "report_keys": list(report),
        "finding_keys": sorted({key for finding in report["findings"] for key in finding}),
        "facts_keys": list(report["facts"]),
        "packages": to_jsonable(facts.packages),
        "toolkit": to_jsonable(facts.toolkit),
    })
    return dict(json.loads(text.replace(str(DRIFT), "<tree>")))


OUTPUTS = {"storage-plan.json": storage_plans, "check-packages.json": check_output}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_the_output_is_what_was_pinned(name: str) -> None:
    output = OUTPUTS[name]()
    pinned = (PINS / name).read_text()
    assert output == json.loads(pinned)
    # the keys in their order too: a reader does not care, a diff of two outputs does
    assert json.dumps(output, indent=1) + "\n" == pinned


def write_pins(directory: Path = PINS) -> None:
    directory.mkdir(exist_ok=True)
    for name, produce in OUTPUTS.items():
        (directory / name).write_text(json.dumps(produce(), indent=1) + "\n")


if __name__ == "__main__":
    write_pins()
    sys.exit(0)
