"""The examples in files/examples are read by gpuhost the way the docs use them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from gpuhost.comfyui.manifest import find_manifest, load_manifest
from gpuhost.comfyui.workflow import load_workflow, prompt_graph, validate
from tests.support.paths import REPO

EXAMPLES = REPO / "files" / "examples"
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"


def recorded_object_info() -> dict:  # type: ignore[type-arg]
    return dict(json.loads((REPO / "tests" / "fixtures" / "comfyui" / "object_info.json").read_text()))


def test_manifest_example_names_the_workflows_checkpoint() -> None:
    manifest = load_manifest(find_manifest(str(EXAMPLES)))
    [entry] = manifest.entries
    assert Path(entry.key).name == CHECKPOINT
    assert entry.expected_bytes == 4_265_380_512 and entry.folder == "checkpoints"


def test_workflow_example_is_valid_where_the_checkpoint_is_listed() -> None:
    graph = prompt_graph(load_workflow(str(EXAMPLES / "sd15.api.json")))
    info = recorded_object_info()
    # the recorded server lists no checkpoint: the example's is the one problem
    missing = validate(graph, info)
    assert [(p.class_type, p.input_name, p.model) for p in missing.problems] == [
        ("CheckpointLoaderSimple", "ckpt_name", True)
    ]
    listed = copy.deepcopy(info)
    listed["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = [CHECKPOINT]
    report = validate(graph, listed)
    assert report.valid, [p.sentence() for p in report.problems]
    assert report.nodes == 7 and report.outputs == ["9"]
