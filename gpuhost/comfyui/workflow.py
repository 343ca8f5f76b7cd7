"""Validate an API-format ComfyUI workflow against a server's /object_info, without queueing it.

ComfyUI validates a prompt only when it is POSTed to /prompt (and a corrupt model shows only when
it runs). This module applies the same checks ComfyUI's execution.validate_prompt applies, with the
same error types and detail strings, to the node definitions the running server publishes:
unknown class_type (missing_node_type), missing required inputs (required_input_missing), links
to missing nodes or outputs, link type mismatches (return_type_mismatch), values that do not
convert (invalid_input_type), out of range (value_smaller_than_min / value_bigger_than_max) or
are not in a list (value_not_in_list: a model file the server does not have). `comfyui_response`
is what POST /prompt would answer, so the two can be compared side by side.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from gpuhost import userfile
from gpuhost.comfyui.http import base_url, check_url, get_json
from gpuhost.model import Finding, Severity, SourceError, UsageError
from gpuhost.redact import redact_url

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft", ".pkl")


@dataclass
class Problem:
    node_id: str
    class_type: str
    type: str  # ComfyUI's error type
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
            "problems": [
                {
                    "node_id": p.node_id,
                    "class_type": p.class_type,
                    "type": p.type,
                    "message": p.message,
                    "details": p.details,
                    "input_name": p.input_name,
                    "model": p.model,
                    "text": p.sentence(),
                }
                for p in self.problems
            ],
            "comfyui_would_answer": {"status": self.comfyui_status, "body": self.comfyui_response},
        }


# --- loading -----------------------------------------------------------------------------


def load_workflow(path: str) -> dict[str, Any]:
    """The prompt graph of an API-format workflow file (bare, or a POST /prompt body)."""
    # no NaN or Infinity: neither is JSON, and neither fits an input
    data = userfile.load_json(path, "workflow", userfile.WORKFLOW_MAX)
    return prompt_graph(data, path)


def prompt_graph(data: Any, origin: str = "workflow") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: expected a JSON object of nodes, got {type(data).__name__}")
    if isinstance(data.get("nodes"), list) and "links" in data:
        raise UsageError(
            f"{origin} is a UI-format workflow (nodes and links), not the API format",
            "In ComfyUI use Workflow > Export (API) and pass that file.",
        )
    graph = data.get("prompt") if isinstance(data.get("prompt"), dict) else data
    if not graph:
        raise UsageError(f"{origin}: the workflow has no nodes")
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            raise UsageError(
                f"{origin}: node {node_id!r} is not an object (API format: {{id: {{class_type, inputs}}}})"
            )
        if "inputs" in node and not isinstance(node["inputs"], dict):
            raise UsageError(f"{origin}: node {node_id!r} has inputs that are not an object")
        if node.get("class_type") is not None and not isinstance(node["class_type"], str):
            raise UsageError(f"{origin}: node {node_id!r}: class_type must be a string, got {node['class_type']!r:.80}")
    return graph


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


def _input_spec(definition: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(name, required|optional, spec) in the server's order."""
    inputs = definition.get("input") or {}
    specs: list[tuple[str, str, Any]] = []
    for category in ("required", "optional"):
        for name, spec in (inputs.get(category) or {}).items():
            specs.append((name, category, spec))
    return specs


def _type_and_options(spec: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(spec, (list, tuple)) and spec:
        kind = spec[0]
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if kind == "COMBO" and isinstance(options.get("options"), list):
            return list(options["options"]), options  # the newer combo form
        return kind, options
    return spec, {}


def _is_model_input(class_type: str, input_name: str, values: list[Any]) -> bool:
    if any(isinstance(v, str) and v.lower().endswith(MODEL_EXTENSIONS) for v in values):
        return True
    return input_name.endswith("_name") and ("loader" in class_type.lower() or "checkpoint" in class_type.lower())


def _types_match(received: str, expected: str) -> bool:
    if received == expected or "*" in (received, expected):
        return True
    wanted = {t.strip() for t in expected.split(",")}
    return any(t.strip() in wanted for t in received.split(","))


# --- validation --------------------------------------------------------------------------


@dataclass
class _Frame:
    """One node being validated: its own errors, and the linked nodes whose verdict it waits for."""

    node_id: str
    errors: list[dict[str, Any]]
    valid: bool
    sources: list[str]
    next_source: int = 0


class _Validator:
    """ComfyUI's validate_inputs, walked with an explicit stack: a chain of any length validates
    without reaching Python's recursion limit, in the same order (and with the same verdicts) as
    ComfyUI's recursion."""

    def __init__(self, graph: dict[str, Any], object_info: dict[str, Any]) -> None:
        self.graph = graph
        self.info = object_info
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}

    def node_inputs(self, node_id: str, class_type: str) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        stack = [self._start(node_id, class_type)]
        while stack:
            frame = stack[-1]
            if frame.next_source < len(frame.sources):
                source_id = frame.sources[frame.next_source]
                frame.next_source += 1
                if source_id in self.validated:  # done, or in progress (a cycle counts as valid, as in ComfyUI)
                    frame.valid = frame.valid and self.validated[source_id][0]
                else:
                    stack.append(self._start(source_id, str(self.graph[source_id].get("class_type"))))
                continue
            stack.pop()
            result = (frame.valid and not frame.errors, frame.errors)
            self.validated[frame.node_id] = result
            if stack:
                stack[-1].valid = stack[-1].valid and result[0]
        return self.validated[node_id]

    def _start(self, node_id: str, class_type: str) -> _Frame:
        self.validated[node_id] = (True, [])  # guards against cycles
        node = self.graph[node_id]
        inputs = node.get("inputs") or {}
        definition = self.info[class_type]
        frame = _Frame(node_id, [], True, [])
        for name, category, spec in _input_spec(definition):
            kind, options = _type_and_options(spec)
            if name not in inputs:
                if category == "required":
                    frame.errors.append(_error("required_input_missing", "Required input is missing", name,
                                               {"input_name": name}))
                continue
            value = inputs[name]
            if isinstance(value, list):
                link_ok, link_error, source_id = self.link(name, spec, kind, value)
                if link_error is not None:
                    frame.errors.append(link_error)
                elif source_id is not None:
                    frame.sources.append(source_id)
                elif not link_ok:
                    frame.valid = False
                continue
            error = self.value(class_type, name, spec, kind, options, value, inputs)
            if error is not None:
                frame.errors.append(error)
        return frame

    def link(
        self, name: str, spec: Any, kind: Any, value: list[Any]
    ) -> tuple[bool, Optional[dict[str, Any]], Optional[str]]:
        """(ok, error, the linked node to validate next)."""
        if len(value) != 2:
            return False, _error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                name,
                {"input_name": name, "input_config": spec, "received_value": value},
            ), None
        source_id, slot = str(value[0]), value[1]
        source = self.graph.get(source_id)
        if source is None:
            return False, _error("linked_node_missing", "Linked node does not exist in the workflow",
                                 f"{name}: node {source_id[:80]!r}", {"input_name": name, "linked_node": value}), None
        source_class = source.get("class_type")
        if source_class not in self.info:
            return False, None, None  # reported on that node
        outputs = self.info[source_class].get("output") or []
        if not isinstance(slot, int) or not 0 <= slot < len(outputs):
            return False, _error("linked_output_missing", "Linked node has no such output",
                                 f"{name}: {source_class} has {len(outputs)} outputs, not slot {slot!r:.40}",
                                 {"input_name": name, "linked_node": value}), None
        received = outputs[slot]
        expected = kind if isinstance(kind, str) else "COMBO"
        received_text = received if isinstance(received, str) else "COMBO"
        if not _types_match(received_text, expected):
            return False, _error("return_type_mismatch", "Return type mismatch between linked nodes",
                                 f"{name}, received_type({received_text}) mismatch input_type({expected})",
                                 {"input_name": name, "input_config": spec, "received_type": received_text,
                                  "linked_node": value}), None
        return True, None, source_id

    def value(self, class_type: str, name: str, spec: Any, kind: Any, options: dict[str, Any], value: Any,
              inputs: dict[str, Any]) -> Optional[dict[str, Any]]:
        if isinstance(kind, str):
            try:
                if kind == "INT":
                    value = int(value)
                elif kind == "FLOAT":
                    converted = float(value)
                    if not math.isfinite(converted):  # "1e400" as text: ComfyUI would compare infinity
                        raise ValueError(f"{converted} is not a finite number")
                    value = converted
                elif kind == "STRING":
                    value = str(value)
                elif kind == "BOOLEAN":
                    value = bool(value)
            except (TypeError, ValueError, OverflowError) as exc:
                return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                              f"{name}, {value}, {exc}",
                              {"input_name": name, "input_config": spec, "received_value": value,
                               "exception_message": str(exc)})
            if kind in ("INT", "FLOAT"):
                if "min" in options and value < options["min"]:
                    return _error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}",
                                  name, {"input_name": name, "input_config": spec, "received_value": value})
                if "max" in options and value > options["max"]:
                    return _error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}",
                                  name, {"input_name": name, "input_config": spec, "received_value": value})
            return None
        if isinstance(kind, list) and value not in kind:
            listed = f"(list of length {len(kind)})" if len(kind) > 20 else str(kind)
            error = _error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}",
                           {"input_name": name, "input_config": None if len(kind) > 20 else spec,
                            "received_value": value})
            error["_model"] = _is_model_input(class_type, name, kind)
            return error
        return None


def _error(kind: str, message: str, details: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate(graph: dict[str, Any], object_info: dict[str, Any], path: str = "", server: str = "") -> WorkflowReport:
    problems: list[Problem] = []
    for node_id, node in graph.items():
        class_type = node.get("class_type")
        if not class_type:
            body = {"error": _error("missing_node_type", f"Node 'ID #{node_id}' has no class_type. The workflow may be "
                                    "corrupted or a custom node is missing.", f"Node ID '#{node_id}'",
                                    {"node_id": node_id, "class_type": None}), "node_errors": {}}
            problems.append(_problem(node_id, "", body["error"]))
            return WorkflowReport(path, server, len(graph), [], problems, 400, body)
        if class_type not in object_info:
            body = {"error": _error("missing_node_type", f"Node '{class_type}' not found. The custom node may not be "
                                    "installed.", f"Node ID '#{node_id}'",
                                    {"node_id": node_id, "class_type": class_type}), "node_errors": {}}
            problems.append(_problem(node_id, class_type, body["error"]))
            return WorkflowReport(path, server, len(graph), [], problems, 400, body)

    outputs = [nid for nid, node in graph.items() if object_info[node["class_type"]].get("output_node")]
    if not outputs:
        error = _error("prompt_no_outputs", "Prompt has no outputs", "", {})
        return WorkflowReport(path, server, len(graph), [], [_problem("", "", error)], 400,
                              {"error": error, "node_errors": {}})

    validator = _Validator(graph, object_info)
    node_errors: dict[str, dict[str, Any]] = {}
    output_errors: list[str] = []
    good = []
    for output in outputs:
        ok, reasons = validator.node_inputs(output, graph[output]["class_type"])
        if ok:
            good.append(output)
            continue
        output_errors += [f"{r['message']}: {r['details']}" for r in reasons]
        for node_id, (node_ok, node_reasons) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id, {"errors": node_reasons, "dependent_outputs": [], "class_type": graph[node_id]["class_type"]}
            )
            if output not in entry["dependent_outputs"]:
                entry["dependent_outputs"].append(output)
    for node_id, entry in node_errors.items():
        for reason in entry["errors"]:
            problems.append(_problem(node_id, entry["class_type"], reason))
        entry["errors"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in entry["errors"]]
    if good:
        accepted: dict[str, Any] = {"prompt_id": "(assigned by the server)", "number": 0, "node_errors": node_errors}
        return WorkflowReport(path, server, len(graph), outputs, problems, 200, accepted)
    error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(output_errors), {})
    refusal = {"error": error, "node_errors": node_errors}
    return WorkflowReport(path, server, len(graph), outputs, problems, 400, refusal)


def _problem(node_id: str, class_type: str, error: dict[str, Any]) -> Problem:
    extra = error.get("extra_info") or {}
    return Problem(
        node_id=node_id,
        class_type=class_type,
        type=error["type"],
        message=error["message"],
        details=error["details"],
        input_name=str(extra.get("input_name") or ""),
        received=extra.get("received_value"),
        model=bool(error.get("_model")),
        extra_info=extra,
    )


# --- against a live server and as check findings -------------------------------------------


def check_workflow(path: str, server: str, timeout: float = 30.0) -> WorkflowReport:
    """Load `path`, fetch `server`/object_info and validate (nothing is queued)."""

    graph = load_workflow(path)
    check_url(server if "://" in server else f"http://{server}", "--comfyui-url")
    base = base_url(server) if "://" in server else f"http://{server}"
    try:
        info = check_object_info(get_json(f"{base}/object_info", timeout=timeout))
    except (OSError, ValueError) as exc:
        raise SourceError(redact_url(f"{base}/object_info"), str(exc) or type(exc).__name__,
                          "Is ComfyUI ready there? `gpuhost wait-ready CONTAINER`, or pass --comfyui-url.") from exc
    return validate(graph, info, path=path, server=redact_url(base))


def workflow_findings(report: WorkflowReport) -> list[Finding]:
    name = os.path.basename(report.path) or report.path
    evidence_base = {"workflow": report.path, "server": report.server,
                     "comfyui_would_answer": {"status": report.comfyui_status, "body": report.comfyui_response}}
    if report.valid:
        return [Finding("comfyui.workflow", "comfyui", Severity.OK,
                        f"workflow {name}: {report.nodes} nodes valid against {report.server}/object_info "
                        f"({len(report.outputs)} output node(s)); not queued",
                        "", evidence_base)]
    findings = []
    for problem in report.problems:
        if problem.model:
            remedy = (f"Put {problem.received!r} in the server's models folder for {problem.input_name} "
                      "(or fix the name in the workflow); ComfyUI lists what it has in /object_info.")
        elif problem.type == "missing_node_type":
            remedy = "Install the custom node that provides it (and check `gpuhost check` for import failures)."
        else:
            remedy = "Fix the value in the workflow (ComfyUI would refuse the POST with this same error)."
        evidence = dict(evidence_base, node_id=problem.node_id, class_type=problem.class_type, type=problem.type,
                        details=problem.details)
        findings.append(Finding("comfyui.workflow", "comfyui", Severity.FAIL, f"workflow {name}: {problem.sentence()}",
                                remedy, evidence))
    return findings
