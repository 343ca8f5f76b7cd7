"""`check --workflow` against what ComfyUI 0.3.64 answered, without a server: the differential test's
recorded POST /prompt bodies and answers (tests/fixtures/comfyui/workflow-replay-0.3.64.json.gz,
written by tests/integration/test_comfyui_workflows.py), and what 0.3.64's classes say of themselves
(node-semantics-0.3.64.json, from tests/support/comfyui_node_semantics.py)."""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest

from gpuhost.comfyui.node_hooks import HOOKS
from gpuhost.comfyui.validation import is_v3
from tests.support.workflow_diff import EXCEPTIONS, differences, predict, read_replay, read_semantics

REPLAY = read_replay()
CASES = REPLAY["cases"]
OBJECT_INFO = REPLAY["object_info"]
SEMANTICS = read_semantics()


def test_the_replay_is_a_recording_of_0_3_64() -> None:
    assert REPLAY["comfyui"] == "0.3.64" and len(CASES) >= 200
    assert {c["status"] for c in CASES} == {200, 400}


@pytest.mark.parametrize("index", range(len(CASES)))
def test_check_predicts_the_recorded_answer(index: int) -> None:
    case = CASES[index]
    report = predict(case["body"], OBJECT_INFO)
    problems = differences(report, case["status"], case["answer"])
    assert not problems, f"{case['what']}\n{json.dumps(case['body'])[:1500]}\n" + "\n".join(problems)


def _errors(answer: Any) -> list[tuple[str, str, dict[str, Any]]]:
    if not isinstance(answer, dict):
        return []
    return [(node_id, entry["class_type"], error) for node_id, entry in (answer.get("node_errors") or {}).items()
            for error in entry["errors"]]


def test_the_replay_covers_what_the_differential_test_is_for() -> None:
    """Every error type ComfyUI's validation gives, on nodes of both APIs; links of every shape; cycles;
    outputs of which some are broken; partial_execution_targets; and few answers left to the order."""
    kinds: collections.Counter[str] = collections.Counter()
    apis: collections.Counter[str] = collections.Counter()
    partly = cycles = targets = order_dependent = 0
    for case in CASES:
        answer = case["answer"]
        kinds.update(error["type"] for _, _, error in _errors(answer))
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            kinds[answer["error"]["type"]] += 1
        apis.update(SEMANTICS[class_type]["api"] for _, class_type, _ in _errors(answer))
        partly += case["status"] == 200 and bool(answer.get("node_errors"))
        targets += "partial_execution_targets" in case["body"]
        report = predict(case["body"], OBJECT_INFO)
        cycles += any(p.type == "link_cycle" for p in report.problems)
        order_dependent += bool(report.order_dependent_nodes or report.order_dependent_outputs)
    assert set(kinds) >= {
        "required_input_missing", "bad_linked_input", "return_type_mismatch", "invalid_input_type",
        "value_smaller_than_min", "value_bigger_than_max", "value_not_in_list", "custom_validation_failed",
        *EXCEPTIONS, "invalid_prompt", "prompt_no_outputs", "prompt_outputs_failed_validation",
    }, kinds
    assert apis["v1"] >= 20 and apis["v3"] >= 20, apis
    assert partly >= 20 and cycles >= 5 and targets >= 5, (partly, cycles, targets)
    assert order_dependent <= len(CASES) // 8, order_dependent


def _word_for_word(answer: Any) -> Any:
    """An answer with what follows the order of ComfyUI's sets put in one order or left out (which
    outputs a node's entry lists depends on the order the outputs were validated in), and what only a
    server can know (its prompt id and number) left out."""
    answer = json.loads(json.dumps(answer))
    answer.pop("prompt_id", None)
    answer.pop("number", None)
    for entry in (answer.get("node_errors") or {}).values():
        entry["errors"].sort(key=lambda e: json.dumps(e, sort_keys=True))
        del entry["dependent_outputs"]
    error = answer.get("error")
    if isinstance(error, dict) and error.get("type") == "prompt_outputs_failed_validation":
        error["details"] = sorted(error["details"].split("\n"))
    return answer


def test_answers_that_do_not_depend_on_order_are_predicted_word_for_word() -> None:
    """Where ComfyUI's answer cannot vary (no exception: their text and input follow the order), the
    whole body: messages, details, input_config, received values."""
    compared = 0
    for case in CASES:
        report = predict(case["body"], OBJECT_INFO)
        if (any(e["type"] in EXCEPTIONS for _, _, e in _errors(case["answer"]))
                or report.order_dependent_nodes or not isinstance(case["answer"], dict)):
            continue
        compared += 1
        assert _word_for_word(report.comfyui_response) == _word_for_word(case["answer"]), case["what"]
    assert compared >= len(CASES) // 2, compared


def test_the_hook_table_is_0_3_64s() -> None:
    recorded = {name: entry["hook"] for name, entry in SEMANTICS.items() if entry.get("hook")}
    assert set(HOOKS) == set(recorded)
    for name, hook in HOOKS.items():
        assert (hook.qualname, list(hook.args), hook.varkw) == (
            recorded[name]["name"], recorded[name]["args"], recorded[name]["varkw"]), name


def test_v3_nodes_are_told_apart_by_their_object_info_keys() -> None:
    for name, entry in SEMANTICS.items():
        assert is_v3({key: None for key in entry["markers"]}) == (entry["api"] == "v3"), name
    assert collections.Counter(entry["api"] for entry in SEMANTICS.values()) == {"v1": 266, "v3": 230}
