"""`check --workflow`: the recorded graph against /object_info, compared with what ComfyUI answered."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.cli import app
from gpuhost.comfyui.workflow import check_workflow, load_workflow, prompt_graph, validate, workflow_findings
from gpuhost.model import Severity, SourceError, UsageError
from tests.support.bad_servers import SSH_BANNER, BadServer, Script, http_response
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
        # what ComfyUI raises, recorded on the node that raised, with the input of the node below it
        ("3", {"model": ["99", 0]}, "exception_during_inner_validation", "'99'"),
        ("3", {"model": [99, 0]}, "exception_during_inner_validation", "99"),
        ("3", {"model": ["4", 7]}, "exception_during_inner_validation", "tuple index out of range"),
        ("3", {"model": ["4", "0"]}, "exception_during_inner_validation",
         "tuple indices must be integers or slices, not str"),
        ("3", {"model": [["4"], 0]}, "exception_during_inner_validation", "unhashable type: 'list'"),
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


def test_unknown_node_type_is_invalid_prompt(object_info: dict[str, Any], request_body: dict[str, Any]) -> None:
    graph = copy.deepcopy(request_body["prompt"])
    graph["10"] = {"class_type": "FlashVSRNode", "inputs": {}}
    report = validate(graph, object_info)
    assert report.comfyui_response == {"error": {
        "type": "invalid_prompt", "message": "Cannot execute because node FlashVSRNode does not exist.",
        "details": "Node ID '#10'", "extra_info": {}}, "node_errors": {}}
    [finding] = workflow_findings(report)
    assert "FlashVSRNode" in finding.message and "custom node" in finding.remedy
    assert finding.evidence["node_id"] == "10"


@pytest.mark.parametrize(("node", "message"), [
    ({"inputs": {}}, "Cannot execute because a node is missing the class_type property."),
    ({"class_type": None, "inputs": {}}, "Cannot execute because node None does not exist."),
    ({"class_type": 5, "inputs": {}}, "Cannot execute because node 5 does not exist."),
])
def test_a_node_without_a_known_class_type(object_info: dict[str, Any], request_body: dict[str, Any],
                                           node: dict[str, Any], message: str) -> None:
    graph = {"10": node, **copy.deepcopy(request_body["prompt"])}
    error = validate(prompt_graph(graph), object_info).comfyui_response["error"]
    assert (error["type"], error["message"], error["details"]) == ("invalid_prompt", message, "Node ID '#10'")


def test_a_node_without_inputs_raises_where_comfyui_does(object_info: dict[str, Any],
                                                         request_body: dict[str, Any]) -> None:
    graph = copy.deepcopy(request_body["prompt"])
    del graph["5"]["inputs"]
    report = validate(graph, with_models(object_info, "v1-5-pruned-emaonly.safetensors"))
    [problem] = report.problems
    assert (problem.node_id, problem.type, problem.details) == ("5", "exception_during_inner_validation", "'inputs'")
    assert problem.extra_info["exception_type"] == "KeyError" and problem.input_name == "latent_image"


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
    with pytest.raises(UsageError, match="does not exist"):
        load_workflow(str(tmp_path / "nope.json"))


# --- hostile workflows and servers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"1": {"class_type": ["SaveImage"], "inputs": {}}}', "class_type must be a node's name"),
        ('{"1": {"class_type": {"name": "SaveImage"}, "inputs": {}}}', "ComfyUI answers HTTP 500"),
        ('{"prompt": {"1": {"class_type": "SaveImage"}}, "partial_execution_targets": "1"}',
         "partial_execution_targets must be a list"),
        ('{"3": {"class_type": "KSampler", "inputs": {"seed": Infinity}}}', "Infinity is not a JSON number"),
        ('{"3": {"class_type": "KSampler", "inputs": {"seed": NaN}}}', "NaN is not a JSON number"),
        ('{"3": {"class_type": "KSampler", "inputs": {"cfg": 1e400}}}', "does not fit a number"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper than 100 levels"),
        ("[" * 500 + "]" * 500, "nests deeper than 100 levels"),
    ],
)
def test_hostile_workflow_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "workflow.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_workflow(str(path))


def test_non_finite_values_given_as_text_are_what_python_makes_of_them(
    object_info: dict[str, Any], request_body: dict[str, Any]
) -> None:
    info = with_models(object_info, "v1-5-pruned-emaonly.safetensors")
    # int("inf") fails; float("1e400") is infinity, above cfg's max; float("nan") passes min and max
    report = validate(mutate(request_body, "3", cfg="1e400", seed="inf", denoise="nan"), info)
    assert sorted((p.input_name, p.type) for p in report.problems) == [
        ("cfg", "value_bigger_than_max"), ("seed", "invalid_input_type")]
    [cfg] = [p for p in report.problems if p.input_name == "cfg"]
    assert cfg.message == "Value inf bigger than max of 100.0" and cfg.received == "inf"
    [nan] = report.warnings
    assert (nan.type, nan.input_name) == ("nan", "denoise") and "computes with NaN" in nan.message
    text = json.dumps(report.to_dict(), allow_nan=False)  # the report stays strict JSON
    assert '"received_value": "inf"' in text
    report = validate(mutate(request_body, "3", denoise="nan"), info)
    assert report.valid and report.comfyui_status == 200 and [w.type for w in report.warnings] == ["nan"]
    [finding] = [f for f in workflow_findings(report) if f.severity is Severity.WARN]
    assert "denoise" in finding.message and finding.remedy


def chain(length: int) -> dict[str, Any]:
    """SaveImage <- VAEDecode <- LatentUpscaleBy <- ... <- EmptyLatentImage: `length` linked nodes."""
    graph: dict[str, Any] = {
        "0": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    }
    for index in range(1, length):
        graph[str(index)] = {"class_type": "LatentUpscaleBy",
                             "inputs": {"samples": [str(index - 1), 0], "upscale_method": "nearest-exact",
                                        "scale_by": 1.0}}
    return graph


def test_a_chain_deeper_than_comfyuis_recursion_is_refused_where_comfyui_refuses_it(
        object_info: dict[str, Any]) -> None:
    info = copy.deepcopy(object_info)
    info["LatentUpscaleBy"] = {
        "input": {"required": {"samples": ["LATENT"], "upscale_method": [["nearest-exact", "bilinear"]],
                               "scale_by": ["FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0}]}},
        "output": ["LATENT"], "output_node": False,
    }
    info["LatentSink"] = {"input": {"required": {"samples": ["LATENT"]}}, "output": [], "output_node": True}
    # 0.3.64 validates by recursion: sink (depth 1) -> 4999 -> ... runs out of Python's recursion limit
    # (measured: the call at depth 986 fails, the frame at depth 980 records it on the node at depth 981)
    graph = chain(5000)
    graph["sink"] = {"class_type": "LatentSink", "inputs": {"samples": ["4999", 0]}}
    report = validate(graph, info)
    assert report.nodes == 5001 and report.comfyui_status == 400
    [problem] = report.problems
    assert (problem.node_id, problem.type) == ("4020", "exception_during_inner_validation")
    assert problem.details == "maximum recursion depth exceeded while calling a Python object"
    assert "deeper than ComfyUI 0.3.64's validation can follow" in problem.sentence()
    short = chain(900)  # within the limit: validated to its far end, which is wrong
    short["sink"] = {"class_type": "LatentSink", "inputs": {"samples": ["899", 0]}}
    short["0"]["inputs"]["width"] = 0
    report = validate(short, info)
    [problem] = report.problems
    assert (problem.node_id, problem.type) == ("0", "value_smaller_than_min")
    assert report.comfyui_response["node_errors"]["0"]["dependent_outputs"] == ["sink"]


def test_a_cycle_is_refused_and_named(object_info: dict[str, Any]) -> None:
    info = copy.deepcopy(object_info)
    info["Loop"] = {"input": {"required": {"x": ["LATENT"]}}, "output": ["LATENT"], "output_node": True}
    graph = {"a": {"class_type": "Loop", "inputs": {"x": ["b", 0]}},
             "b": {"class_type": "Loop", "inputs": {"x": ["a", 0]}}}
    report = validate(graph, info)
    # ComfyUI recurses to its limit, and the frames that unwind record no error of their own
    assert report.comfyui_status == 400 and report.comfyui_response["node_errors"] == {}
    assert report.comfyui_response["error"]["details"] == ""
    [cycle] = [p for p in report.problems if p.type == "link_cycle"]
    assert cycle.details.startswith("a -> b -> a:")


def object_info_with(**changes: Any) -> bytes:
    info = json.loads(OBJECT_INFO.read_text())
    info.update(changes)
    return json.dumps(info).encode()


SAVE_IMAGE_MIN_TEXT = json.loads(OBJECT_INFO.read_text())["KSampler"]
SAVE_IMAGE_MIN_TEXT["input"]["required"]["steps"][1]["min"] = "1"

BAD_SERVERS = {
    "ssh-banner": (Script(prefix=SSH_BANNER, answer_before_request=True), "not an HTTP answer"),
    "short-body": (Script.body(b'{"KSampler": {', length=5000), "cut short"),
    "not-json": (Script.body(b"<html>", content_type="text/html"), "not valid JSON"),
    "a-list": (Script.body(b"[]"), "not a JSON object of node classes"),
    "class-is-a-number": (Script.body(object_info_with(SaveImage=5)), "SaveImage is described by int"),
    "min-is-text": (Script.body(object_info_with(KSampler=SAVE_IMAGE_MIN_TEXT)), "KSampler: steps: min is '1'"),
    "http-500": (Script.body(b"{}", status="500 Internal Server Error"), "answered HTTP 500"),
    "huge": (Script(prefix=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{",
                    filler_bytes=100 * 1024 * 1024), "larger than 32.0 MiB"),
}


@pytest.mark.parametrize("name", sorted(BAD_SERVERS))
def test_check_workflow_against_a_bad_server_is_a_source_error(name: str, tmp_path: Path,
                                                                request_body: dict[str, Any]) -> None:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(request_body))
    script, message = BAD_SERVERS[name]
    started = time.monotonic()
    with BadServer(script) as server, pytest.raises(SourceError, match=message):
        check_workflow(str(path), server.url, timeout=5.0)
    assert time.monotonic() - started < 5.0
    if name == "huge":
        assert server.bytes_sent < 80 * 1024 * 1024  # reading stopped at the cap


def test_check_workflow_against_a_trickling_server_meets_its_deadline(tmp_path: Path,
                                                                       request_body: dict[str, Any]) -> None:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(request_body))
    body = OBJECT_INFO.read_bytes()
    slow = Script(prefix=http_response(b"", length=len(body)), trickle=body, interval=0.05)
    started = time.monotonic()
    with BadServer(slow) as server, pytest.raises(SourceError, match=r"no complete answer within 0\.5 s"):
        check_workflow(str(path), server.url, timeout=0.5)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1:8188", "http://127.0.0.1:99999", "http://127.0.0.1:8188 ", "http://", "http://a b:1",
            "gopher://x", "http://127.0.0.1:0"],
)
def test_check_workflow_with_a_bad_url_is_a_usage_error(url: str, tmp_path: Path,
                                                        request_body: dict[str, Any]) -> None:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(request_body))
    with pytest.raises(UsageError, match="--comfyui-url"):
        check_workflow(str(path), url)


def test_check_cli_workflow_exit_codes(tmp_path: Path, request_body: dict[str, Any]) -> None:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(request_body))
    base = ["check", "--workflow", str(path), "--docker-host", "unix:///nonexistent/docker.sock", "--json"]
    with BadServer(BAD_SERVERS["ssh-banner"][0]) as server:
        result = CliRunner().invoke(app, [*base, "--comfyui-url", server.url])
    assert result.exit_code == 3, result.output
    assert "not an HTTP answer" in json.loads(result.stdout)["error"]
    result = CliRunner().invoke(app, [*base, "--comfyui-url", "ftp://127.0.0.1:8188"])
    assert result.exit_code == 2, result.output
    hostile = tmp_path / "hostile.json"
    hostile.write_text('{"3": {"class_type": ["KSampler"], "inputs": {"seed": Infinity}}}')
    result = CliRunner().invoke(app, [*base[:2], str(hostile), *base[3:], "--comfyui-url", "http://127.0.0.1:1"])
    assert result.exit_code == 2, result.output
