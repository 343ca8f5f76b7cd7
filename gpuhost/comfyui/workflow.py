"""Validate an API-format ComfyUI workflow against a server's /object_info, without queueing it.

ComfyUI validates a prompt only when it is POSTed to /prompt (and a corrupt model shows only when it
runs). validation.py applies ComfyUI 0.3.64's own validation to the node definitions the running
server publishes, so `comfyui_status`/`comfyui_response` are what POST /prompt would answer: the same
status, the same node ids, the same error types and details (a missing model file is
value_not_in_list on a file-name input). This module loads the file, turns that answer into problems
and findings, and adds what ComfyUI accepts but the run will not survive (warnings: a NaN, a V3 option
ComfyUI does not check, a constant where a link belongs, ...), and says what ComfyUI's answer leaves
unsaid (a link cycle: ComfyUI refuses it without naming a node).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost import userfile
from gpuhost.comfyui.http import base_url, check_url, get_json
from gpuhost.comfyui.validation import (
    COMFYUI_VERSION,
    EXECUTION_DEEPEST_LINKS,
    RECURSION_MESSAGE,
    Note,
    validate_prompt,
)
from gpuhost.model import Finding, Severity, SourceError, UsageError
from gpuhost.options import CLI, Option
from gpuhost.redact import redact_url

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft", ".pkl")


@dataclass
class Problem:
    node_id: str
    class_type: str
    type: str  # ComfyUI's error type (or gpuhost's own: link_cycle, and the warnings' kinds)
    message: str
    details: str
    input_name: str = ""
    received: Any = None
    # a model file the server does not list (value_not_in_list on a file-name input)
    model: bool = False
    extra_info: dict[str, Any] = field(default_factory=dict)

    def sentence(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "workflow"
        if self.model:
            return (
                f"{where}: model file {self.received!r} for {self.input_name} is not on the server "
                f"(ComfyUI: {self.type}: {self.details})"
            )
        if self.type.startswith("exception_during") and RECURSION_MESSAGE in self.details:
            return (f"{where}: {self.type}: {self.details}: the chain of linked nodes above this one is deeper "
                    f"than ComfyUI {COMFYUI_VERSION}'s validation can follow (about 980 nodes)")
        return f"{where}: {self.type}: {self.message}" + (f": {self.details}" if self.details else "")


@dataclass
class WorkflowReport:
    path: str
    server: str
    nodes: int
    outputs: list[str]
    problems: list[Problem]
    # what POST /prompt would answer: (status, body)
    comfyui_status: int
    comfyui_response: dict[str, Any]
    # what ComfyUI accepts and the run may not survive
    warnings: list[Problem] = field(default_factory=list)
    # the output nodes ComfyUI would run (the others are ignored, their errors in node_errors)
    good_outputs: list[str] = field(default_factory=list)
    # parts of ComfyUI's answer that another order of its Python sets could change (validation.py)
    order_dependent_nodes: list[str] = field(default_factory=list)
    order_dependent_outputs: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "server": self.server,
            "valid": self.valid,
            "nodes": self.nodes,
            "outputs": self.outputs,
            "good_outputs": self.good_outputs,
            "problems": [_problem_dict(p) for p in self.problems],
            "warnings": [_problem_dict(p) for p in self.warnings],
            "comfyui_would_answer": {"status": self.comfyui_status, "body": finite(self.comfyui_response)},
            "order_dependent": {"nodes": self.order_dependent_nodes, "outputs": self.order_dependent_outputs},
        }


def _problem_dict(p: Problem) -> dict[str, Any]:
    return {
        "node_id": p.node_id,
        "class_type": p.class_type,
        "type": p.type,
        "message": p.message,
        "details": p.details,
        "input_name": p.input_name,
        "model": p.model,
        "text": p.sentence(),
    }


def finite(value: Any) -> Any:
    """`value` with NaN and the infinities as the text Python prints for them: ComfyUI writes them into
    its answer as bare NaN/Infinity, which strict JSON has no words for."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


@dataclass
class WorkflowRequest:
    """What POST /prompt is given: the graph, and the output nodes to run (None: all of them)."""

    graph: dict[str, Any]
    partial_execution_targets: Optional[list[Any]] = None


# --- loading -----------------------------------------------------------------------------


# `gpuhost check --workflow FILE [--comfyui-url URL]` (gpuhost.fleet.options.CHECK lists them)
WORKFLOW_OPTIONS = (
    Option("--workflow", "Also validate this API-format workflow against the ComfyUI server's /object_info "
           "(nothing is queued): unknown nodes, model files the server lacks, bad values, missing inputs, broken "
           "links.", kind="path", metavar="FILE", fronts=(CLI,)),
    Option("--comfyui-url", "With --workflow: the ComfyUI server (default: the ready ComfyUI container check "
           "finds).", metavar="URL", fronts=(CLI,)),
)


def load_workflow(path: str) -> dict[str, Any]:
    """The prompt graph of an API-format workflow file (bare, or a POST /prompt body)."""
    return load_request(path).graph


def load_request(path: str) -> WorkflowRequest:
    """An API-format workflow file as POST /prompt would take it (bare, or a POST /prompt body)."""
    # no NaN or Infinity: neither is JSON, and neither fits an input
    data = userfile.load_json(path, "workflow", userfile.WORKFLOW_MAX)
    return prompt_request(data, path)


def prompt_graph(data: Any, origin: str = "workflow") -> dict[str, Any]:
    return prompt_request(data, origin).graph


def prompt_request(data: Any, origin: str = "workflow") -> WorkflowRequest:
    """The graph (and partial_execution_targets) of a bare graph or a POST /prompt body. What is not
    the API format's shape is a UsageError, also where ComfyUI would answer something for it (HTTP 500
    for a class_type that is a list; odd verdicts for inputs that are not an object)."""
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: expected a JSON object of nodes, got {type(data).__name__}")
    if isinstance(data.get("nodes"), list) and "links" in data:
        raise UsageError(
            f"{origin} is a UI-format workflow (nodes and links), not the API format",
            "In ComfyUI use Workflow > Export (API) and pass that file.",
        )
    body = isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]
    graph = data["prompt"] if body else data
    targets = data.get("partial_execution_targets") if body else None
    if targets is not None and not isinstance(targets, list):
        raise UsageError(f"{origin}: partial_execution_targets must be a list of node ids, got {targets!r:.80}")
    if not graph:
        raise UsageError(f"{origin}: the workflow has no nodes")
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            raise UsageError(
                f"{origin}: node {node_id!r} is not an object (API format: {{id: {{class_type, inputs}}}})"
            )
        if "inputs" in node and not isinstance(node["inputs"], dict):
            raise UsageError(f"{origin}: node {node_id!r} has inputs that are not an object")
        if isinstance(node.get("class_type"), (list, dict)):
            raise UsageError(f"{origin}: node {node_id!r}: class_type must be a node's name, got "
                             f"{node['class_type']!r:.80} (ComfyUI answers HTTP 500 to it)")
    return WorkflowRequest(graph, targets)


# --- object_info helpers -----------------------------------------------------------------


def check_object_info(info: Any) -> dict[str, Any]:
    """/object_info as ComfyUI publishes it (the parts validation reads); ValueError names the first
    part that is not: a server that answers otherwise is not a ComfyUI to validate against."""
    if not isinstance(info, dict):
        raise ValueError("not a JSON object of node classes")
    for name, definition in info.items():
        if not isinstance(definition, dict):
            raise ValueError(f"node class {name} is described by {type(definition).__name__}, not an object")
        inputs = definition.get("input")
        if inputs is not None and not isinstance(inputs, dict):
            raise ValueError(f"{name}: `input` is not an object")
        for category in ("required", "optional"):
            specs = (inputs or {}).get(category)
            if specs is None:
                continue
            if not isinstance(specs, dict):
                raise ValueError(f"{name}: `input.{category}` is not an object")
            for input_name, spec in specs.items():
                if not isinstance(spec, list) or not spec:
                    raise ValueError(f"{name}: {input_name}: the input is described by {spec!r:.60}, not a list")
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                for bound in ("min", "max"):
                    value = options.get(bound)
                    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                        raise ValueError(f"{name}: {input_name}: {bound} is {value!r:.40}, not a number")
        output = definition.get("output")
        if output is not None and not isinstance(output, list):
            raise ValueError(f"{name}: `output` is not a list")
    return info


def _is_model_input(class_type: str, input_name: str, values: Any) -> bool:
    if isinstance(values, list) and any(isinstance(v, str) and v.lower().endswith(MODEL_EXTENSIONS) for v in values):
        return True
    return input_name.endswith("_name") and ("loader" in class_type.lower() or "checkpoint" in class_type.lower())


# --- validation --------------------------------------------------------------------------


def validate(graph: dict[str, Any], object_info: dict[str, Any], path: str = "", server: str = "",
             partial_execution_targets: Optional[list[Any]] = None) -> WorkflowReport:
    verdict = validate_prompt(graph, object_info, partial_execution_targets)
    problems: list[Problem] = []
    for node_id, entry in verdict.node_errors.items():
        class_type = str(entry["class_type"])
        for error in entry["errors"]:
            problem = _problem(node_id, class_type, error)
            if error["type"] == "value_not_in_list":
                spec_type = _spec_type(object_info, class_type, problem.input_name)
                problem.model = _is_model_input(class_type, problem.input_name, spec_type)
            problems.append(problem)
    error = verdict.error
    if error is not None and not verdict.node_errors:
        node_id = error["details"][len("Node ID '#"):-1] if error["type"] == "invalid_prompt" else ""
        node = graph.get(node_id) if node_id else None
        named = node.get("class_type") if isinstance(node, dict) else None
        problems.append(_problem(node_id, "" if named is None else str(named), error))
    for cycle in _distinct(verdict.cycles):
        path_text = " -> ".join([*cycle, cycle[0]])
        problems.append(Problem(
            cycle[0], str(graph[cycle[0]].get("class_type")), "link_cycle", "Links form a cycle",
            f"{path_text}: ComfyUI {COMFYUI_VERSION} follows links without end there (to Python's recursion "
            "limit) and refuses every output that depends on it, without naming a node",
            extra_info={"cycle": cycle},
        ))
    warnings = [_warning(graph, note) for note in _distinct_notes(verdict.notes)]
    return WorkflowReport(
        path, server, len(graph), verdict.outputs, problems, verdict.status, verdict.body, warnings,
        verdict.good_outputs, sorted(verdict.uncertain_nodes), sorted(verdict.uncertain_outputs),
    )


def _spec_type(object_info: dict[str, Any], class_type: str, input_name: str) -> Any:
    inputs = object_info.get(class_type, {}).get("input") or {}
    for category in ("required", "optional"):
        spec = (inputs.get(category) or {}).get(input_name)
        if spec:
            return spec[0]
    return None


def _distinct(cycles: list[list[str]]) -> list[list[str]]:
    seen: set[frozenset[str]] = set()
    distinct = []
    for cycle in cycles:
        if frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            distinct.append(cycle)
    return distinct


def _distinct_notes(notes: list[Note]) -> list[Note]:
    seen: set[tuple[str, str, str]] = set()
    distinct = []
    for note in notes:
        key = (note.node_id, note.input_name, note.kind)
        if key not in seen:
            seen.add(key)
            distinct.append(note)
    return distinct


WARNINGS = {
    "nan": "{input} is NaN ({value!r}): ComfyUI {version} takes it (NaN is neither below min nor above max) "
           "and the node computes with NaN",
    "bool_from_text": "{input} is the text {value!r}: ComfyUI {version} converts it with bool(), which makes "
                      "it True",
    "combo_unchecked": "{input} is {value!r}, not one of its options {detail}: ComfyUI {version} does not check "
                       "the options of this kind of input (V3 nodes' COMBO); the node gets it as is and may fail "
                       "when it runs",
    "constant_for_link": "{input} is the constant {value!r} where a link from a {detail} output belongs: "
                         "ComfyUI {version} accepts it and the node fails when it runs",
    "negative_slot": "{input} links to slot {slot} of node {source!r}: ComfyUI {version} counts a negative slot "
                     "from the end, as Python indexes (the UI never writes one)",
    "file_unverified": "{input}: ComfyUI checks that {value} exists on the server's disk, which /object_info "
                       "does not show: not checked here",
    "stops_worker": "{detail}",
}
STOPS_WORKER = {
    "no inputs": "the node has no `inputs`: ComfyUI {version} accepts the workflow (no output it runs needs "
                 "this node), then its execution reads every node's inputs and the KeyError stops its prompt "
                 "worker: the server keeps answering HTTP and runs no prompt again until it is restarted",
    "depth": "a chain of {value} links ends here: ComfyUI {version} accepts it, then its execution walks the chain "
             "by recursion and from about {deepest} links Python's recursion limit stops its prompt worker: the "
             "server keeps answering HTTP and runs no prompt again until it is restarted",
    "missing node": "{input} links to node {value!r}, which is not in the workflow: ComfyUI {version}'s validation "
                    "does not follow this link (an input the node does not declare, or a {{\"__value__\": ...}} it "
                    "unwraps into a link) but its execution does, and the missing node stops its prompt worker: the "
                    "server keeps answering HTTP and runs no prompt again until it is restarted",
}


def _warning(graph: dict[str, Any], note: Note) -> Problem:
    source, slot = (note.value[0], note.value[1]) if note.kind == "negative_slot" else ("", "")
    detail = note.detail
    if note.kind == "stops_worker":
        detail = STOPS_WORKER[note.detail].format(value=note.value, version=COMFYUI_VERSION, input=note.input_name,
                                                  deepest=EXECUTION_DEEPEST_LINKS + 1)
    text = WARNINGS[note.kind].format(input=note.input_name, value=finite(note.value), detail=detail,
                                      version=COMFYUI_VERSION, source=source, slot=slot)
    class_type = graph[note.node_id].get("class_type")
    return Problem(note.node_id, str(class_type), note.kind, text, "", note.input_name, finite(note.value))


def _problem(node_id: str, class_type: str, error: dict[str, Any]) -> Problem:
    extra = error.get("extra_info") or {}
    return Problem(
        node_id=node_id,
        class_type=class_type,
        type=error["type"],
        message=error["message"],
        details=error["details"],
        input_name=str(extra.get("input_name") or ""),
        received=finite(extra.get("received_value")),
        extra_info=finite(extra),
    )


# --- against a live server and as check findings -------------------------------------------


def check_workflow(path: str, server: str, timeout: float = 30.0) -> WorkflowReport:
    """Load `path`, fetch `server`/object_info and validate (nothing is queued)."""

    request = load_request(path)
    check_url(server if "://" in server else f"http://{server}", "--comfyui-url")
    base = base_url(server) if "://" in server else f"http://{server}"
    try:
        info = check_object_info(get_json(f"{base}/object_info", timeout=timeout))
    except (OSError, ValueError) as exc:
        raise SourceError(redact_url(f"{base}/object_info"), str(exc) or type(exc).__name__,
                          "Is ComfyUI ready there? `gpuhost wait-ready CONTAINER`, or pass --comfyui-url.") from exc
    return validate(request.graph, info, path=path, server=redact_url(base),
                    partial_execution_targets=request.partial_execution_targets)


def _remedy(problem: Problem) -> str:
    if problem.model:
        return (f"Put {problem.received!r} in the server's models folder for {problem.input_name} "
                "(or fix the name in the workflow); ComfyUI lists what it has in /object_info.")
    if problem.type == "invalid_prompt" and "does not exist" in problem.message:
        return "Install the custom node that provides it (and check `gpuhost check` for import failures)."
    if problem.type == "invalid_prompt":
        return "Give every node its class_type (export the workflow again with Export (API))."
    if problem.type == "prompt_no_outputs":
        return "Add an output node (SaveImage, PreviewImage, ...) or list one in partial_execution_targets."
    if problem.type == "link_cycle":
        return "Break the cycle: a node cannot take its input from a node that depends on it."
    if problem.type.startswith("exception_during"):
        return ("Fix the link named here: it points at a node that is not in the workflow, at a slot its node "
                "does not have, or at a node without `inputs`.")
    if problem.type == "custom_validation_failed":
        return "The node itself refuses the value: put the file it names in the server's folder, or fix the value."
    return "Fix the value in the workflow (ComfyUI would refuse the POST with this same error)."


WARNING_REMEDIES = {
    "nan": "Give a number.",
    "bool_from_text": "Give true or false (JSON booleans), not text.",
    "combo_unchecked": "Pick one of the options /object_info lists for it.",
    "constant_for_link": "Link the input to a node's output of that type.",
    "negative_slot": "Give the slot's index counted from 0.",
    "file_unverified": "Make sure the file is on the server.",
    "stops_worker": "Do not queue it as it is: give the node its inputs (or remove it), remove the link to the "
                    "missing node, or split the chain.",
}
# warnings that fail the check: queueing the workflow breaks the server for every later prompt
FAILING_WARNINGS = ("stops_worker",)


def workflow_findings(report: WorkflowReport) -> list[Finding]:
    name = os.path.basename(report.path) or report.path
    evidence_base = {"workflow": report.path, "server": report.server,
                     "comfyui_would_answer": {"status": report.comfyui_status,
                                              "body": finite(report.comfyui_response)}}
    findings = []
    if report.valid:
        findings.append(Finding("comfyui.workflow", "comfyui", Severity.OK,
                                f"workflow {name}: {report.nodes} nodes valid against {report.server}/object_info "
                                f"({len(report.outputs)} output node(s)); not queued",
                                "", evidence_base))
    ignored = [o for o in report.outputs if o not in report.good_outputs]
    partly = (f" (ComfyUI would accept the POST, run output(s) {', '.join(report.good_outputs)} and ignore "
              f"{', '.join(ignored)})") if report.comfyui_status == 200 and ignored else ""
    for problem in report.problems:
        evidence = dict(evidence_base, node_id=problem.node_id, class_type=problem.class_type, type=problem.type,
                        details=problem.details)
        findings.append(Finding("comfyui.workflow", "comfyui", Severity.FAIL,
                                f"workflow {name}: {problem.sentence()}{partly}", _remedy(problem), evidence))
    for warning in report.warnings:
        evidence = dict(evidence_base, node_id=warning.node_id, class_type=warning.class_type, type=warning.type)
        severity = Severity.FAIL if warning.type in FAILING_WARNINGS else Severity.WARN
        findings.append(Finding("comfyui.workflow", "comfyui", severity,
                                f"workflow {name}: node {warning.node_id} ({warning.class_type}): {warning.message}",
                                WARNING_REMEDIES[warning.type], evidence))
    return findings
