"""Workflows (gpuhost/comfyui/workflow.py) on arbitrary input, against the recorded /object_info: loading
gives a graph or one UsageError; validating a graph gives a report whose JSON is strict, never another
exception; a server's /object_info is either accepted whole or refused with ValueError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuhost.comfyui.workflow import check_object_info, load_workflow, prompt_graph, validate, workflow_findings
from gpuhost.model import UsageError
from tests.support.paths import FIXTURES

OBJECT_INFO = json.loads((FIXTURES / "comfyui" / "object_info.json").read_text())
CLASSES = sorted(OBJECT_INFO)
INPUT_NAMES = sorted({name for d in OBJECT_INFO.values() for c in ("required", "optional")
                      for name in ((d.get("input") or {}).get(c) or {})})

finite = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=10))
node_ids = st.sampled_from([str(n) for n in range(8)])
links = st.one_of(st.tuples(node_ids, st.integers(-1, 4)).map(list), st.lists(finite, max_size=3))
input_values = st.one_of(finite, links, st.sampled_from(["v1-5-pruned-emaonly.safetensors", "euler", "normal",
                                                          "1e400", "inf", "nan"]))
nodes = st.fixed_dictionaries(
    {"class_type": st.one_of(st.sampled_from(CLASSES), st.text(max_size=8))},
    optional={"inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), input_values, max_size=6)},
)
graphs = st.dictionaries(node_ids, nodes, min_size=1, max_size=8)


@given(graph=graphs)
def test_any_graph_validates_to_a_strict_report(graph: dict[str, Any]) -> None:
    graph = prompt_graph(graph)
    report = validate(graph, OBJECT_INFO, path="w.json", server="http://127.0.0.1:8188")
    json.dumps(report.to_dict(), allow_nan=False)
    assert report.comfyui_status in (200, 400)
    assert report.valid == (not report.problems)
    for finding in workflow_findings(report):
        json.dumps(finding.to_dict(), allow_nan=False)


json_documents = st.recursive(
    finite, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=15,
)
texts = st.one_of(
    json_documents.map(json.dumps),
    graphs.map(json.dumps),
    st.text(max_size=80),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "[" * 3000, '{"1": {"class_type": ["X"]}}']),
)


@given(text=texts)
def test_any_file_loads_to_a_graph_or_one_usage_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path: Path = tmp_path_factory.mktemp("workflow") / "w.json"
    path.write_text(text, encoding="utf-8")
    try:
        graph = load_workflow(str(path))
    except UsageError as exc:
        assert len(str(exc)) < 1000 + len(str(path))
        return
    report = validate(graph, OBJECT_INFO)
    json.dumps(report.to_dict(), allow_nan=False)


@given(info=st.one_of(json_documents, st.dictionaries(st.sampled_from(CLASSES), json_documents, max_size=4)))
def test_any_object_info_is_accepted_or_refused(info: Any) -> None:
    try:
        checked = check_object_info(info)
    except ValueError:
        return
    graph = {"1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
             "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["1", 0]}}}
    json.dumps(validate(graph, checked).to_dict(), allow_nan=False)
