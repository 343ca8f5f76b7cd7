"""ComfyUI 0.3.64's validation as gpuhost mirrors it (gpuhost/comfyui/validation.py, node_hooks.py),
case by case, against the /object_info the differential test recorded. Each expected answer is the one
a live 0.3.64 gave to the same POST (the differential's replay holds most of them; the rest were sent
by hand and are quoted here)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpuhost.comfyui.validation import types_match, validate_prompt
from gpuhost.comfyui.workflow import validate, workflow_findings
from gpuhost.model import Severity
from tests.support.workflow_diff import UPLOAD_NAME, read_replay

OBJECT_INFO = read_replay()["object_info"]
IMAGE = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}


def save(source: Any) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": "x"}}


def blend(**inputs: Any) -> dict[str, Any]:
    return {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["1", 0], "blend_factor": 0.5,
                                                   "blend_mode": "normal", **inputs}}


def errors(prompt: dict[str, Any]) -> tuple[int, list[tuple[str, str, str]]]:
    verdict = validate_prompt(copy.deepcopy(prompt), OBJECT_INFO)
    found = [(node_id, e["type"], e["details"]) for node_id, entry in verdict.node_errors.items()
             for e in entry["errors"]]
    return verdict.status, found


@pytest.mark.parametrize(("source", "details"), [
    (["9", 0], "'9'"),  # prompt["9"]: KeyError
    ([1, 0], "1"),  # the ids are strings
    ([["1"], 0], "unhashable type: 'list'"),
    (["1", 5], "tuple index out of range"),  # a classic node's RETURN_TYPES is a tuple
    (["1", "0"], "tuple indices must be integers or slices, not str"),
    (["3", 3], "list index out of range"),  # a V3 node's is a list
    (["3", "0"], "list indices must be integers or slices, not str"),
])
def test_links_that_raise_raise_what_comfyui_raises(source: list[Any], details: str) -> None:
    assert errors({"1": IMAGE, "3": blend(), "2": save(source)}) == (
        400, [("2", "exception_during_validation", details)])


@pytest.mark.parametrize(("source", "expected"), [
    (["1", -1], (200, [])),  # the last output, as Python indexes
    (["1", False], (200, [])),  # False is 0
    (["1", True], (400, [("2", "exception_during_validation", "tuple index out of range")])),  # and True is 1
])
def test_python_indexing_takes_what_python_takes(source: list[Any], expected: tuple[int, list[Any]]) -> None:
    assert errors({"1": IMAGE, "2": save(source)}) == expected


def test_a_raise_further_up_is_recorded_on_that_node_with_the_input_below() -> None:
    verdict = validate_prompt({"1": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}}, "2": save(["1", 0])},
                              OBJECT_INFO)
    [error] = verdict.node_errors["1"]["errors"]
    assert (error["type"], error["details"]) == ("exception_during_inner_validation", "'9'")
    assert error["extra_info"]["input_name"] == "images" and error["extra_info"]["linked_node"] == ["1", 0]
    assert error["extra_info"]["exception_type"] == "KeyError"


def test_v3_combos_go_unchecked_and_check_warns() -> None:
    report = validate({"1": IMAGE, "3": blend(blend_mode="nope"), "2": save(["3", 0])}, OBJECT_INFO)
    assert report.valid and report.comfyui_status == 200
    [warning] = report.warnings
    assert (warning.node_id, warning.type, warning.input_name) == ("3", "combo_unchecked", "blend_mode")
    [finding] = [f for f in workflow_findings(report) if f.severity is Severity.WARN]
    assert "does not check" in finding.message


def test_floats_go_through_python_float() -> None:
    assert errors({"1": IMAGE, "3": blend(blend_factor="1e400"), "2": save(["3", 0])}) == (
        400, [("3", "value_bigger_than_max", "blend_factor")])
    report = validate({"1": IMAGE, "3": blend(blend_factor="nan"), "2": save(["3", 0])}, OBJECT_INFO)
    assert report.valid and [w.type for w in report.warnings] == ["nan"]


def test_types_match_as_0_3_64s_io_types_compare() -> None:
    assert types_match("INT", "*") and types_match("*", "IMAGE")
    assert types_match("INT", "INT,FLOAT") and types_match("FLOAT, INT", "INT")
    assert not types_match("LATENT", "IMAGE") and not types_match(["a"], "COMBO")
    assert types_match(["a", "b"], ["a", "b"]) and not types_match(["a"], ["b"])


@pytest.mark.parametrize(("image", "expected"), [
    (UPLOAD_NAME, (200, [])),
    ("", (200, [])),  # os.path.exists of the input folder itself
    (".", (200, [])),
    ("missing.png", (400, [("1", "custom_validation_failed", "image - Invalid image file: missing.png")])),
    (5, (400, [("1", "exception_during_inner_validation", "'int' object has no attribute 'endswith'")])),
    (["a", "b", "c"], (400, [("1", "exception_during_inner_validation", "'list' object has no attribute 'endswith'")])),
])
def test_load_image_runs_its_validate_inputs(image: Any, expected: tuple[int, list[Any]]) -> None:
    assert errors({"1": {"class_type": "LoadImage", "inputs": {"image": image}}, "2": save(["1", 0])}) == expected


def test_load_image_hooks_get_none_for_a_link_and_fail_without_their_argument() -> None:
    linked = {"5": {"class_type": "PrimitiveString", "inputs": {"value": "x.png"}},
              "1": {"class_type": "LoadImage", "inputs": {"image": ["5", 0]}}, "2": save(["1", 0])}
    assert errors(linked)[1] == [("1", "exception_during_inner_validation",
                                  "'NoneType' object has no attribute 'endswith'")]
    missing = {"1": {"class_type": "LoadImage", "inputs": {}}, "2": save(["1", 0])}
    assert errors(missing)[1] == [("1", "exception_during_inner_validation",
                                   "LoadImage.VALIDATE_INPUTS() missing 1 required positional argument: 'image'")]
    video = {"1": {"class_type": "LoadVideo", "inputs": {}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    assert errors(video)[1] == [("1", "exception_during_inner_validation",
                                 "LoadVideo.validate_inputs() missing 1 required positional argument: 'file'")]


def test_a_file_the_list_cannot_settle_is_taken_as_there_and_said_so() -> None:
    report = validate({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png [output]"}}, "2": save(["1", 0])},
                      OBJECT_INFO)
    assert report.comfyui_status == 200 and [w.type for w in report.warnings] == ["file_unverified"]
    assert report.order_dependent_outputs == ["2"]


def test_api_node_hooks() -> None:
    camera = {"camera_control_type": "simple", "horizontal_movement": 0, "vertical_movement": 0, "pan": 0,
              "tilt": 0, "roll": 0, "zoom": 0}
    prompt = {"1": {"class_type": "KlingCameraControls", "inputs": camera},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    message = "Invalid camera control configs: at least one of the values must be non-zero"
    assert errors(prompt) == (400, [("1", "custom_validation_failed", f"{name} - {message}")
                                    for name in list(camera)[1:]])
    flux = {"prompt": "x", "prompt_upsampling": False, "seed": 0, "aspect_ratio": "16:0", "raw": False,
            "image_prompt_strength": 0.1}
    assert errors({"1": {"class_type": "FluxProUltraImageNode", "inputs": flux}, "2": save(["1", 0])}) == (
        400, [("1", "custom_validation_failed", "aspect_ratio - division by zero")])
    tripo = {"1": {"class_type": "TripoConversionNode", "inputs": {"original_model_task_id": "x", "format": "GLTF"}}}
    assert errors(tripo) == (400, [("1", "exception_during_validation", "'original_model_task_id'")])


# --- what stops ComfyUI's worker after it accepted the prompt ----------------------------------


def stops_worker(prompt: dict[str, Any]) -> list[tuple[str, str]]:
    report = validate(prompt, OBJECT_INFO)
    assert report.comfyui_status == 200 and report.valid
    found = [(w.node_id, w.message) for w in report.warnings if w.type == "stops_worker"]
    failing = [f for f in workflow_findings(report) if f.severity is Severity.FAIL]
    assert len(failing) == len(found)
    return found


def test_a_node_without_inputs_that_no_output_needs() -> None:
    [(node_id, message)] = stops_worker({"1": IMAGE, "2": save(["1", 0]), "3": {"class_type": "ImageInvert"}})
    assert node_id == "3" and "no `inputs`" in message and "runs no prompt again" in message
    # refused: nothing runs, nothing to warn of
    report = validate({"1": IMAGE, "2": save(["3", 0]), "3": {"class_type": "ImageInvert"}}, OBJECT_INFO)
    assert report.comfyui_status == 400 and not report.warnings


def test_a_link_only_the_execution_follows() -> None:
    undeclared = {"1": dict(IMAGE, inputs={**IMAGE["inputs"], "extra": ["999", 0]}), "2": save(["1", 0])}
    [(node_id, message)] = stops_worker(undeclared)
    assert node_id == "1" and "'999'" in message
    unwrapped = {"1": IMAGE, "3": blend(blend_mode={"__value__": ["999", 0]}), "2": save(["3", 0])}
    assert [node_id for node_id, _ in stops_worker(unwrapped)] == ["3"]
    unwrapped["4"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    unwrapped["3"]["inputs"]["blend_mode"] = {"__value__": ["4", 0]}  # a node that is there: it runs
    assert stops_worker(unwrapped) == []


def test_a_chain_validation_takes_and_execution_does_not() -> None:
    # measured on 0.3.64: 983 ImageInvert validate (the deepest call at depth 985); a node 981 links
    # above its deepest ancestor stops the worker, 980 runs
    chain: dict[str, Any] = {"0": IMAGE}
    for index in range(1, 984):
        chain[str(index)] = {"class_type": "ImageInvert", "inputs": {"image": [str(index - 1), 0]}}
    chain["out"] = {"class_type": "PreviewImage", "inputs": {"images": ["983", 0]}}
    [(node_id, message)] = stops_worker(chain)
    assert node_id == "out" and "a chain of 984 links" in message
