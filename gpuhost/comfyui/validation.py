"""ComfyUI 0.3.64's validation of a prompt, run over the server's /object_info instead of its classes.

This is `execution.validate_prompt` and `validate_inputs` of 0.3.64 (and `validate_node_input` from
`comfy_execution/validation.py`), step for step, so that what it answers is what POST /prompt answers:

- every node needs a `class_type` the server knows (else `invalid_prompt`, at the first such node);
  the output nodes (`OUTPUT_NODE`, or those in `partial_execution_targets`) are validated one by one;
- a node's inputs: a required one missing, a link that is not a 2-list, a link's type that does not
  match, a value that does not convert (`int()`, `float()`, `str()`, `bool()`, as Python does it),
  a number below `min` or above `max`, a value not in a list of options (only the classic list form:
  0.3.64 does not check the `COMBO` options of V3 nodes), then the node's own hook (node_hooks.py);
- the same Python exceptions where ComfyUI raises them: a link to a node that is not there (KeyError),
  an output slot past the end (IndexError; a negative one counts from the end, as Python indexes),
  a slot that is not an integer (TypeError), no `inputs` at all (KeyError); one raised in the output
  node is `exception_during_validation`, one raised further up is `exception_during_inner_validation`
  on that node, named with the input that led there;
- a node upstream with errors makes the nodes below it invalid without errors of their own; an output
  that is invalid is ignored when another is valid (HTTP 200, its errors in `node_errors`).

ComfyUI walks links by recursion without a guard: a link cycle recurses until Python's recursion
limit, and the frames that unwind record nothing but "invalid"; a chain deeper than about 980 nodes
runs out the same way. Both are reproduced here without recursion (an explicit stack), the depth with
the limits measured on 0.3.64 (below).

Where ComfyUI's answer depends on the order of a Python set (it keeps the output nodes and a node's
input names in sets, whose order changes with every process), `uncertain_nodes` and
`uncertain_outputs` say which parts of this prediction another order could change.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from gpuhost.comfyui.node_hooks import HOOKS, Hook, HookContext, call_hook

COMFYUI_VERSION = "0.3.64"
# what the RecursionError says: a classic node gives out in a call from C, a V3 node mostly in its
# Python (measured on 0.3.64 under CPython 3.11; for V3 nodes it changes with what the server has
# cached of the class, so only the first words are certain)
RECURSION_MESSAGE = "maximum recursion depth exceeded"
RECURSION_MESSAGE_V1 = "maximum recursion depth exceeded while calling a Python object"
# Measured against 0.3.64 under CPython 3.11 with chains of linked nodes (the live workflow tests keep
# them true): the deepest validate_inputs call that still returns (the output node is depth 1) for a
# node of the classic API and for a V3 node (whose INPUT_TYPES takes more calls), and the deepest frame
# whose except clause still has room to record the error.
DEEPEST_CALL_V1 = 985
DEEPEST_CALL_V3 = 978
DEEPEST_HANDLER = 980
# The execution that follows a 200 walks every node's ancestors by recursion too (caching.py
# get_ordered_ancestry), in the prompt worker's thread, outside any except clause: measured, a node 980
# links above its deepest ancestor runs, 981 kills the thread.
EXECUTION_DEEPEST_LINKS = 980
# text that reads as false, which bool() makes True
FALSE_WORDS = frozenset({"false", "0", "no", "off", "none", "null"})
# within this many levels of those limits the exact frame is not certain
DEPTH_MARGIN = 8

Result = tuple[bool, list[dict[str, Any]], str]


class _RecursionLimit(RecursionError):
    """ComfyUI's RecursionError, met at a depth this validator reaches without recursing."""


@dataclass(frozen=True)
class Note:
    """Something ComfyUI 0.3.64 accepts that the run may not survive (workflow.py words it)."""

    node_id: str
    input_name: str
    kind: str
    value: Any = None
    detail: str = ""


@dataclass
class Verdict:
    """What POST /prompt answers for a prompt, and what this prediction cannot be sure of."""

    status: int
    body: dict[str, Any]
    outputs: list[str]
    good_outputs: list[str]
    node_errors: dict[str, dict[str, Any]]
    cycles: list[list[str]] = field(default_factory=list)
    too_deep: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    uncertain_nodes: set[str] = field(default_factory=set)
    uncertain_outputs: set[str] = field(default_factory=set)

    @property
    def error(self) -> Optional[dict[str, Any]]:
        error = self.body.get("error")
        return error if isinstance(error, dict) else None


def is_v3(definition: dict[str, Any]) -> bool:
    """A node of the V3 API (`comfy_api.latest`): its /object_info entry is a NodeInfoV1 dataclass,
    which always carries these keys; the classic node_info adds each only when it is set."""
    return all(key in definition for key in ("deprecated", "experimental", "api_node"))


def types_match(received: Any, expected: Any) -> bool:
    """validate_node_input(received, expected) with the `__ne__` of 0.3.64's IO types: "*" matches
    anything (every "*" in 0.3.64 is such a type), "A,B" matches a type that shares a member, and a
    list of options matches only the same list."""
    if received == "*" or expected == "*":
        return True
    if isinstance(received, str) and isinstance(expected, str):
        if received == expected:
            return True
        return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})
    return bool(received == expected)


def is_link(value: Any) -> bool:
    """comfy_execution.graph_utils.is_link."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)))


def _error(kind: str, message: str, details: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _input_info(class_inputs: dict[str, Any], name: str) -> tuple[Any, Optional[str], Any]:
    """comfy_execution.graph.get_input_info."""
    for category in ("required", "optional", "hidden"):
        group = class_inputs.get(category)
        if isinstance(group, dict) and name in group:
            spec = group[name]
            return spec[0], category, spec[1] if len(spec) > 1 else {}
    return None, None, None


def _listing(input_type: Any, extra_info: Any) -> Optional[list[Any]]:
    if isinstance(input_type, list):
        return input_type
    if isinstance(extra_info, dict) and isinstance(extra_info.get("options"), list):
        return list(extra_info["options"])
    return None


class _PromptValidation:
    def __init__(self, prompt: dict[str, Any], object_info: dict[str, Any]) -> None:
        self.prompt = prompt
        self.info = object_info
        self.validated: dict[str, Result] = {}
        self.notes: list[Note] = []
        # for what another set order could change
        self.children: dict[str, list[str]] = {}
        self.raised_in_loop: set[str] = set()
        self.cycles: list[list[str]] = []
        self.too_deep: list[str] = []
        self.depth_seen: dict[str, int] = {}
        self.link_types: Optional[set[str]] = None
        # each validated node's inputs as ComfyUI leaves them in the prompt it queues (converted,
        # {"__value__": v} unwrapped): what the execution then reads
        self.rewritten: dict[str, dict[str, Any]] = {}

    # --- one node: validate_inputs ---------------------------------------------------------

    def _return_types(self, class_type: str) -> Any:
        definition = self.info[class_type]
        outputs = definition.get("output") or []
        return list(outputs) if is_v3(definition) else tuple(outputs)

    def _frame(self, unique_id: str) -> Generator[str, Result, Result]:
        """validate_inputs(unique_id): yields the id of each linked node to validate and receives its
        result (or the exception its validation raised) at that point, as ComfyUI's `await` does."""
        node = self.prompt[unique_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        definition = self.info[class_type]
        class_inputs = definition.get("input") or {}
        hook = HOOKS.get(class_type)
        hook_args: tuple[str, ...] = hook.args if hook else ()
        checks_values = not (hook and hook.varkw)  # min, max and lists, for the inputs no hook takes
        values = dict(inputs)  # ComfyUI writes the converted values back into the prompt
        names = list(class_inputs.get("required") or {})
        names += [n for n in (class_inputs.get("optional") or {}) if n not in names]
        errors: list[dict[str, Any]] = []
        valid = True
        received_types: dict[str, Any] = {}
        called = self.children.setdefault(unique_id, [])
        # ComfyUI stops at the first input that raises, in an order that changes from run to run;
        # the other inputs are checked first here (their linked nodes validated), then it is raised
        raised: Optional[Exception] = None

        for x in names:
            input_type, category, extra_info = _input_info(class_inputs, x)
            if x not in inputs:
                if category == "required":
                    errors.append(_error("required_input_missing", "Required input is missing", f"{x}",
                                         {"input_name": x}))
                continue
            val = inputs[x]
            info = [input_type, extra_info]
            if not isinstance(val, list):
                try:
                    error = self._value(unique_id, x, info, val, values, checks_values and x not in hook_args)
                except Exception as exc:  # a comparison Python refuses ("8" < 1) raises out, as there
                    raised = raised or exc
                    continue
                if error is not None:
                    errors.append(error)
                continue
            if len(val) != 2:
                errors.append(_error("bad_linked_input",
                                     "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                     f"{x}", {"input_name": x, "input_config": info, "received_value": val}))
                continue
            o_id = val[0]
            try:
                received_type = self._return_types(self.prompt[o_id]["class_type"])[val[1]]
            except Exception as exc:
                raised = raised or exc
                continue
            received_types[x] = received_type
            if isinstance(val[1], int) and not isinstance(val[1], bool) and val[1] < 0:
                self.notes.append(Note(unique_id, x, "negative_slot", val))
            if "input_types" not in hook_args and not types_match(received_type, input_type):
                errors.append(_error(
                    "return_type_mismatch", "Return type mismatch between linked nodes",
                    f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                    {"input_name": x, "input_config": info, "received_type": received_type, "linked_node": val},
                ))
                continue
            called.append(o_id)
            try:
                linked = yield o_id
                if linked[0] is False:
                    valid = False
                    continue
            except Exception as exc:
                valid = False
                reasons = [_error("exception_during_inner_validation", "Exception when validating inner node",
                                  str(exc), {"input_name": x, "input_config": info, "exception_message": str(exc),
                                             "exception_type": _type_name(exc), "linked_node": val})]
                self.validated[o_id] = (False, reasons, o_id)
                continue

        if raised is not None:
            self.raised_in_loop.add(unique_id)
            raise raised
        if hook is not None:
            errors += self._hook(unique_id, hook, definition, values, received_types)
        result: Result = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = result
        self.rewritten[unique_id] = values
        return result

    def _value(self, unique_id: str, x: str, info: list[Any], val: Any, values: dict[str, Any],
               check_value: bool) -> Optional[dict[str, Any]]:
        """The checks of a constant input: its error, or None."""
        input_type, extra_info = info
        if isinstance(val, dict) and "__value__" in val:
            val = val["__value__"]
            values[x] = val
        given = val
        try:
            if input_type == "INT":
                val = int(val)
                values[x] = val
            if input_type == "FLOAT":
                val = float(val)
                values[x] = val
            if input_type == "STRING":
                val = str(val)
                values[x] = val
            if input_type == "BOOLEAN":
                val = bool(val)
                values[x] = val
        except Exception as exc:
            return _error("invalid_input_type", f"Failed to convert an input value to a {input_type} value",
                          f"{x}, {val}, {exc}", {"input_name": x, "input_config": info, "received_value": val,
                                                "exception_message": str(exc)})
        if input_type == "FLOAT" and math.isnan(val):
            self.notes.append(Note(unique_id, x, "nan", given))
        if input_type == "BOOLEAN" and isinstance(given, str) and given.strip().lower() in FALSE_WORDS:
            self.notes.append(Note(unique_id, x, "bool_from_text", given))
        if not check_value:
            return None
        self._note_constant(unique_id, x, input_type, val)
        extra = {"input_name": x, "input_config": info, "received_value": val}
        if "min" in extra_info and val < extra_info["min"]:
            return _error("value_smaller_than_min", "Value {} smaller than min of {}".format(val, extra_info["min"]),
                          f"{x}", extra)
        if "max" in extra_info and val > extra_info["max"]:
            return _error("value_bigger_than_max", "Value {} bigger than max of {}".format(val, extra_info["max"]),
                          f"{x}", extra)
        if isinstance(input_type, list):
            if val not in input_type:
                if len(input_type) > 20:
                    listed, config = f"(list of length {len(input_type)})", None
                else:
                    listed, config = str(input_type), info
                return _error("value_not_in_list", "Value not in list", f"{x}: '{val}' not in {listed}",
                              {"input_name": x, "input_config": config, "received_value": val})
            return None
        options = _listing(input_type, extra_info)
        if options is not None and val not in options:
            self.notes.append(Note(unique_id, x, "combo_unchecked", val, str(options)[:200]))
        return None

    def _hook(self, unique_id: str, hook: Hook, definition: dict[str, Any], values: dict[str, Any],
              received_types: dict[str, Any]) -> list[dict[str, Any]]:
        """The node's own VALIDATE_INPUTS / validate_inputs, called as ComfyUI calls it."""
        class_inputs = definition.get("input") or {}
        data_inputs = {k: v for k, v in class_inputs.items() if k != "hidden"} if is_v3(definition) else class_inputs
        input_data_all: dict[str, Any] = {}
        for x in values:  # get_input_data: a link is not known yet (None), an unknown input is left out
            _, category, extra = _input_info(data_inputs, x)
            if is_link(values[x]) and not (extra and extra.get("rawLink", False)):
                input_data_all[x] = None
            elif category is not None:
                input_data_all[x] = values[x]
        filtered = {x: v for x, v in input_data_all.items() if x in hook.args or hook.varkw}
        if "input_types" in hook.args:
            filtered["input_types"] = received_types
        listing = None
        if hook.file_input:
            spec_type, _, spec_extra = _input_info(class_inputs, hook.file_input)
            listing = _listing(spec_type, spec_extra)
        context = HookContext(listing)
        ret = call_hook(hook, context, filtered)
        for name in context.unverified:
            self.notes.append(Note(unique_id, hook.file_input, "file_unverified", name))
        errors = []
        for x in filtered:
            if ret is not True:
                details = f"{x}" + ("" if ret is False else f" - {ret}")
                errors.append(_error("custom_validation_failed", "Custom validation failed for node", details,
                                     {"input_name": x}))
        return errors

    def _note_constant(self, node_id: str, name: str, input_type: Any, value: Any) -> None:
        """A constant given to an input that only a link can feed (an IMAGE, a MODEL: a type some node
        outputs): 0.3.64 accepts it, and the node fails when it runs."""
        if not isinstance(input_type, str) or input_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "*"):
            return
        if self.link_types is None:
            self.link_types = {t.strip() for d in self.info.values() if isinstance(d, dict)
                               for output in (d.get("output") or []) if isinstance(output, str)
                               for t in output.split(",")}
        if any(t.strip() in self.link_types for t in input_type.split(",")):
            self.notes.append(Note(node_id, name, "constant_for_link", value, input_type))

    # --- the recursion, driven by a stack ---------------------------------------------------

    def _deepest(self, node_id: str) -> int:
        definition = self.info[self.prompt[node_id]["class_type"]]
        return DEEPEST_CALL_V3 if is_v3(definition) else DEEPEST_CALL_V1

    def run(self, output: str) -> Result:
        """`await validate_inputs(prompt_id, prompt, output, validated)`: its result, or the exception it
        raises."""
        stack: list[tuple[str, Generator[str, Result, Result]]] = []
        on_stack: set[str] = set()
        action, payload = "call", cast(Any, output)
        while True:
            if action == "call":
                node_id = payload
                if node_id in self.validated:
                    action, payload = "send", self.validated[node_id]
                elif node_id in on_stack:
                    # a cycle: ComfyUI recurses around it until the recursion limit; the frames that
                    # unwind see the linked node invalid, and the outermost overwrite what the inner recorded
                    start = [frame_id for frame_id, _ in stack].index(node_id)
                    self.cycles.append([frame_id for frame_id, _ in stack[start:]])
                    action, payload = "send", (False, [], node_id)
                elif len(stack) + 1 > self._deepest(node_id):
                    self.too_deep.append(node_id)
                    v1 = self._deepest(node_id) == DEEPEST_CALL_V1
                    action, payload = "throw", _RecursionLimit(RECURSION_MESSAGE_V1 if v1 else RECURSION_MESSAGE)
                else:
                    self.depth_seen[node_id] = max(self.depth_seen.get(node_id, 0), len(stack) + 1)
                    stack.append((node_id, self._frame(node_id)))
                    on_stack.add(node_id)
                    action, payload = "send", None
                if not stack:  # the output itself was validated already
                    return cast(Result, payload)
            node_id, frame = stack[-1]
            try:
                if action == "throw":
                    if isinstance(payload, _RecursionLimit) and len(stack) > DEEPEST_HANDLER:
                        frame.close()  # its except clause has no room left either: the error goes on up
                        raise payload
                    request = frame.throw(payload)
                else:
                    request = frame.send(payload)
            except StopIteration as stop:
                stack.pop()
                on_stack.discard(node_id)
                if not stack:
                    return cast(Result, stop.value)
                action, payload = "send", stop.value
                continue
            except Exception as exc:
                stack.pop()
                on_stack.discard(node_id)
                if not stack:
                    raise
                action, payload = "throw", exc
                continue
            action, payload = "call", request


def _type_name(exc: BaseException) -> str:
    kind = RecursionError if isinstance(exc, _RecursionLimit) else type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _invalid_prompt(message: str, node_id: str) -> Verdict:
    error = _error("invalid_prompt", message, f"Node ID '#{node_id}'", {})
    return Verdict(400, {"error": error, "node_errors": {}}, [], [], {})


def validate_prompt(prompt: dict[str, Any], object_info: dict[str, Any],
                    partial_execution_targets: Optional[list[Any]] = None) -> Verdict:
    """execution.validate_prompt of ComfyUI 0.3.64: POST /prompt's status and body for `prompt`."""
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return _invalid_prompt("Cannot execute because a node is missing the class_type property.", x)
        class_type = prompt[x]["class_type"]
        definition = object_info.get(class_type) if isinstance(class_type, str) else None
        if definition is None:
            return _invalid_prompt(f"Cannot execute because node {class_type} does not exist.", x)
        if definition.get("output_node") is True and (
                partial_execution_targets is None or x in partial_execution_targets):
            outputs.append(x)
    if not outputs:
        error = _error("prompt_no_outputs", "Prompt has no outputs", "", {})
        return Verdict(400, {"error": error, "node_errors": {}}, [], [], {})

    validation = _PromptValidation(prompt, object_info)
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, dict[str, Any]] = {}
    for o in outputs:
        try:
            valid, reasons, _ = validation.run(o)
        except Exception as exc:
            valid = False
            reasons = [_error("exception_during_validation", "Exception when validating node", str(exc),
                              {"exception_type": _type_name(exc)})]
            validation.validated[o] = (False, reasons, o)
        if valid is True:
            good.append(o)
            continue
        failed.append((o, reasons))
        for node_id, (node_valid, node_reasons, _) in validation.validated.items():
            if node_valid is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {"errors": node_reasons, "dependent_outputs": [],
                                            "class_type": prompt[node_id]["class_type"]}
                node_errors[node_id]["dependent_outputs"].append(o)

    uncertain_nodes, uncertain_outputs = _uncertain(validation, outputs, good)
    verdict = Verdict(200, {}, outputs, good, node_errors, validation.cycles, validation.too_deep, validation.notes,
                      uncertain_nodes, uncertain_outputs)
    if good:
        verdict.body = {"prompt_id": "(assigned by the server)", "number": 0, "node_errors": node_errors}
        queued = {node_id: dict(node, inputs=validation.rewritten[node_id]) if node_id in validation.rewritten
                  else node for node_id, node in prompt.items()}
        verdict.notes += execution_hazards(queued, good)
        return verdict
    lines = [f"{error['message']}: {error['details']}" for _, errors in failed for error in errors]
    error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines), {})
    verdict.status, verdict.body = 400, {"error": error, "node_errors": node_errors}
    return verdict


def execution_hazards(prompt: dict[str, Any], good_outputs: list[str]) -> list[Note]:
    """What stops 0.3.64's prompt worker once a prompt is accepted. Its execution first computes a cache
    key for every node of the prompt, those no output needs included: it reads `node["inputs"]` (a
    KeyError without them) and recurses through the ancestors (a RecursionError past the limit). Then it
    follows every link from the outputs it runs, through all of a node's inputs, also those validation
    ignores (an input the node does not declare, a {"__value__": [id, slot]} that validation unwrapped
    into a link): a node that is not there raises NodeNotFoundError. All of it runs in the worker thread
    where nothing catches it: the server goes on answering HTTP and never runs a prompt again.

    `prompt` is the prompt as ComfyUI queues it (validation rewrites the inputs it converts)."""
    notes = [Note(node_id, "", "stops_worker", None, "no inputs") for node_id, node in prompt.items()
             if "inputs" not in node]
    height: dict[str, int] = {}  # links from a node up to its deepest ancestor
    for root in prompt:
        if root in height:
            continue
        stack: list[tuple[str, list[str]]] = [(root, _ancestors(prompt, root))]
        on_path = {root}
        while stack:
            node_id, pending = stack[-1]
            if pending:
                parent = pending.pop()
                if parent not in height and parent not in on_path:  # a cycle ends the walk, as order_mapping does
                    stack.append((parent, _ancestors(prompt, parent)))
                    on_path.add(parent)
                continue
            stack.pop()
            on_path.discard(node_id)
            height[node_id] = max([0, *(height.get(p, 0) + 1 for p in _ancestors(prompt, node_id))])
    deepest = max(height, key=lambda n: height[n], default=None)
    if deepest is not None and height[deepest] > EXECUTION_DEEPEST_LINKS - DEPTH_MARGIN:
        notes.append(Note(deepest, "", "stops_worker", height[deepest], "depth"))
    seen: set[str] = set()
    todo = list(good_outputs)
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        inputs = prompt[node_id].get("inputs")
        for name, value in (inputs.items() if isinstance(inputs, dict) else ()):
            if not is_link(value):
                continue
            if value[0] in prompt:
                todo.append(value[0])
            else:
                notes.append(Note(node_id, name, "stops_worker", value[0], "missing node"))
    return notes


def _ancestors(prompt: dict[str, Any], node_id: str) -> list[str]:
    """The nodes a node links to, as caching.get_ordered_ancestry follows them (any input that is_link,
    to a node that is there)."""
    inputs = prompt[node_id].get("inputs")
    if not isinstance(inputs, dict):
        return []
    return [value[0] for value in inputs.values() if is_link(value) and value[0] in prompt]


def _uncertain(validation: _PromptValidation, outputs: list[str], good: list[str]) -> tuple[set[str], set[str]]:
    """The nodes whose entry in node_errors, and the outputs whose verdict, another order of ComfyUI's
    sets could change.

    - A node that raises stops at that input; which of its other linked nodes ComfyUI had validated
      by then depends on the order: those reached only through such nodes may be missing.
    - Around a cycle the recursion runs out at a depth where a linked node off the cycle may be the one
      that cannot be validated: that node (and what it links to) may carry "maximum recursion depth
      exceeded", and an output that shares it may be refused with it.
    - Near the depth limits the frame that records the error may be a few nodes off.
    - A file a node's hook checks on the server's disk, which its list of files cannot settle.
    """
    certain: set[str] = set(outputs)
    todo = list(outputs)
    while todo:
        node_id = todo.pop()
        if node_id in validation.raised_in_loop:
            continue
        for child in validation.children.get(node_id, []):
            if child not in certain:
                certain.add(child)
                todo.append(child)
    seen = set(validation.validated) | set(validation.children)
    uncertain = seen - certain

    on_cycles = {node_id for cycle in validation.cycles for node_id in cycle}
    off_cycle: set[str] = set()
    todo = [c for node_id in on_cycles for c in validation.children.get(node_id, []) if c not in on_cycles]
    while todo:
        node_id = todo.pop()
        if node_id in off_cycle or node_id in on_cycles:
            continue
        off_cycle.add(node_id)
        todo.extend(validation.children.get(node_id, []))
    deep = {node_id for node_id, depth in validation.depth_seen.items()
            if depth >= min(DEEPEST_CALL_V3, DEEPEST_HANDLER) - DEPTH_MARGIN}
    deep |= set(validation.too_deep)
    # a file the node's list could not settle (node_hooks.py): taken as there, which it may not be
    unverified = {note.node_id for note in validation.notes if note.kind == "file_unverified"}
    uncertain |= off_cycle | deep | unverified

    uncertain_outputs: set[str] = set()
    touchy = off_cycle | deep | unverified
    for output in outputs:
        reach = {output}
        todo = [output]
        while todo:
            node_id = todo.pop()
            for child in validation.children.get(node_id, []):
                if child not in reach:
                    reach.add(child)
                    todo.append(child)
        if reach & touchy:
            uncertain_outputs.add(output)
    return uncertain, uncertain_outputs
