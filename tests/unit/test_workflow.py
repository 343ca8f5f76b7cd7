"""`check --workflow`: the recorded graph against /object_info, compared with what ComfyUI answered."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gpuhost.comfyui.workflow import load_workflow, prompt_graph, validate, workflow_findings
from gpuhost.model import Severity, UsageError
from tests.support.paths import FIXTURES

OBJECT_INFO = FIXTURES / "comfyui" / "object_info.json"


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return dict(json.loads(OBJECT_INFO.read_text()))


@pytest.fixture
def request_body(shared_dir: Path) -> dict[str, Any]:
    return dict(json.loads((shared_dir / "fixtures/comfyui/prompt-missing-model.request.json").read_text()))


def with_models(info: dict[str, Any], *names: str) -> dict[str, Any]:
    info = copy.deepcopy(info)
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(names)
    return info


def test_missing_model_is_what_comfyui_answered_after_the_post(
    shared_dir: Path, object_info: dict[str, Any], request_body: dict[str, Any]
) -> None:
    recorded = json.loads((shared_dir / "fixtures/comfyui/prompt-missing-model.json").read_text())
    report = validate(prompt_graph(request_body), object_info)
    assert report.comfyui_status == 400  # the recorded POST answered HTTP 400
    assert report.comfyui_response == recorded
    [problem] = report.problems
    assert (problem.node_id, problem.class_type, problem.type) == ("4", "CheckpointLoaderSimple", "value_not_in_list")
    assert problem.model and problem.received == "v1-5-pruned-emaonly.safetensors"
    assert "model file 'v1-5-pruned-emaonly.safetensors' for ckpt_name is not on the server" in problem.sentence()
    [finding] = workflow_findings(report)
    assert finding.severity is Severity.FAIL and finding.id == "comfyui.workflow"
    assert finding.evidence["comfyui_would_answer"]["body"] == recorded


def test_the_same_graph_with_the_model_present_is_valid(
    object_info: dict[str, Any], request_body: dict[str, Any]
) -> None:
    report = validate(prompt_graph(request_body), with_models(object_info, "v1-5-pruned-emaonly.safetensors"))
    assert report.valid and report.outputs == ["9"] and report.comfyui_status == 200
    [finding] = workflow_findings(report)
    assert finding.severity is Severity.OK and "7 nodes valid" in finding.message


def test_long_model_lists_are_summarised_like_comfyui(
    object_info: dict[str, Any], request_body: dict[str, Any]
) -> None:
    info = with_models(object_info, *[f"model-{n}.safetensors" for n in range(25)])
    [problem] = validate(prompt_graph(request_body), info).problems
    assert problem.details == "ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in (list of length 25)"
    assert problem.extra_info["input_config"] is None


def mutate(body: dict[str, Any], node: str, **inputs: Any) -> dict[str, Any]:
    graph = copy.deepcopy(body["prompt"])
    for name, value in inputs.items():
        if value is None:
            del graph[node]["inputs"][name]
        else:
            graph[node]["inputs"][name] = value
    return dict(graph)


@pytest.mark.parametrize(
    ("node", "inputs", "kind", "details"),
    [
        ("3", {"steps": 0}, "value_smaller_than_min", "steps"),
        ("3", {"denoise": 1.5}, "value_bigger_than_max", "denoise"),
        ("3", {"seed": "forty-two"}, "invalid_input_type", "seed, forty-two, invalid literal for int()"),
        ("3", {"sampler_name": "eulerr"}, "value_not_in_list", "sampler_name: 'eulerr' not in (list of length"),
        ("3", {"scheduler": "sharp"}, "value_not_in_list", "scheduler: 'sharp' not in ['simple'"),
        ("5", {"width": None}, "required_input_missing", "width"),
        ("3", {"positive": ["6", 0, 1]}, "bad_linked_input", "positive"),
        ("3", {"model": ["99", 0]}, "linked_node_missing", "model: node '99'"),
        ("3", {"model": ["4", 7]}, "linked_output_missing", "model: CheckpointLoaderSimple has 3 outputs, not slot 7"),
        ("3", {"model": ["4", 1]}, "return_type_mismatch", "model, received_type(CLIP) mismatch input_type(MODEL)"),
    ],
)
def test_bad_values_and_links(
    object_info: dict[str, Any],
    request_body: dict[str, Any],
    node: str,
    inputs: dict[str, Any],
    kind: str,
    details: str,
) -> None:
    info = with_models(object_info, "v1-5-pruned-emaonly.safetensors")
    report = validate(mutate(request_body, node, **inputs), info)
    assert not report.valid and report.comfyui_status == 400
    [problem] = report.problems
    assert (problem.node_id, problem.type) == (node, kind)
    assert problem.details.startswith(details)
    assert report.comfyui_response["node_errors"][node]["dependent_outputs"] == ["9"]


def test_errors_in_two_nodes_are_both_reported(object_info: dict[str, Any], request_body: dict[str, Any]) -> None:
    graph = mutate(request_body, "3", steps=0)
    graph["5"]["inputs"]["batch_size"] = 0
    report = validate(graph, object_info)
    assert sorted((p.node_id, p.type) for p in report.problems) == [
        ("3", "value_smaller_than_min"),
        ("4", "value_not_in_list"),
        ("5", "value_smaller_than_min"),
    ]


def test_unknown_node_type_is_missing_node_type(object_info: dict[str, Any], request_body: dict[str, Any]) -> None:
    graph = copy.deepcopy(request_body["prompt"])
    graph["10"] = {"class_type": "FlashVSRNode", "inputs": {}}
    report = validate(graph, object_info)
    assert report.comfyui_response["error"]["type"] == "missing_node_type"
    assert report.comfyui_response["error"]["details"] == "Node ID '#10'"
    [finding] = workflow_findings(report)
    assert "FlashVSRNode" in finding.message and "custom node" in finding.remedy


def test_no_output_node(object_info: dict[str, Any], request_body: dict[str, Any]) -> None:
    graph = copy.deepcopy(request_body["prompt"])
    del graph["9"]
    assert validate(graph, object_info).comfyui_response["error"]["type"] == "prompt_no_outputs"


def test_bare_api_format_and_request_body_load_alike(tmp_path: Path, request_body: dict[str, Any]) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(request_body["prompt"]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps(request_body))
    assert load_workflow(str(bare)) == load_workflow(str(wrapped)) == request_body["prompt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object of nodes"),
        ('{"nodes": [], "links": []}', "UI-format workflow"),
        ("{}", "has no nodes"),
        ('{"3": "KSampler"}', "node '3' is not an object"),
    ],
)
def test_bad_workflow_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "workflow.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_workflow(str(path))


def test_missing_workflow_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_workflow(str(tmp_path / "nope.json"))
