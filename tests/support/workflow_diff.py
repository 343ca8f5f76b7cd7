"""The differential test of `check --workflow` against ComfyUI's own POST /prompt: the workflows it
starts from, the variants hypothesis makes of them, how a prediction is compared with an answer, the
live server's HTTP calls, and the replay file the unit suite checks recorded answers with.

Every variant starts from a small valid workflow (8x8 images, nodes of both of ComfyUI's node APIs,
several output nodes) and changes one to three things: an input's value in type, range and
membership; a link in every shape JSON allows; an input, a node, its `inputs` or its class_type
removed or replaced; a cycle; another output; partial_execution_targets. Values that stay valid stay
near the template's own, so that what ComfyUI accepts (and then runs) stays tiny.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import struct
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from hypothesis import strategies as st

from gpuhost.comfyui.node_hooks import HOOKS
from gpuhost.comfyui.workflow import WorkflowReport, prompt_request, validate
from tests.support.paths import FIXTURES

REPLAY = FIXTURES / "comfyui" / "workflow-replay-0.3.64.json.gz"
SEMANTICS = FIXTURES / "comfyui" / "node-semantics-0.3.64.json"
UPLOAD_NAME = "gpuhost-diff-8x8.png"
PREFIX = "gpuhost-diff"
EXCEPTIONS = ("exception_during_validation", "exception_during_inner_validation")


def png_8x8(rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """An 8x8 RGB PNG, made with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * 8 for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# --- the workflows the variants start from ------------------------------------------------

def _image(width: int = 8, height: int = 8, color: int = 0) -> dict[str, Any]:
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1, "color": color}}


def _save(source: list[Any], prefix: str = PREFIX) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": prefix}}


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def templates(upload: str = UPLOAD_NAME) -> dict[str, dict[str, Any]]:
    """Valid workflows (but for "model": no checkpoint) that need no model file. V1 (classic) and V3
    nodes side by side; two or three output nodes each."""
    return {
        "image": {
            "1": _image(),
            "2": _node("ImageInvert", image=["1", 0]),
            "3": _save(["2", 0]),
            "4": _node("ImageBlend", image1=["1", 0], image2=["2", 0], blend_factor=0.5, blend_mode="normal"),  # V3
            "5": _node("PreviewImage", images=["4", 0]),
        },
        "mask": {
            "1": _image(color=255),
            "2": _node("SolidMask", value=1.0, width=8, height=8),
            "3": _node("MaskToImage", mask=["2", 0]),
            "4": _node("ImageCompositeMasked", destination=["1", 0], source=["3", 0], x=0, y=0,
                       resize_source=False, mask=["2", 0]),
            "5": _save(["4", 0]),
            "6": _node("GrowMask", mask=["2", 0], expand=1, tapered_corners=True),
            "7": _node("MaskPreview", mask=["6", 0]),
        },
        "text": {
            "1": _node("PrimitiveString", value="gpu"),  # V3
            "2": _node("StringConcatenate", string_a=["1", 0], string_b="host", delimiter="-"),  # V3
            "3": _node("PreviewAny", source=["2", 0]),  # V1, its input is "*"
            "4": _node("StringLength", string=["2", 0]),  # V3
            "5": _node("PreviewAny", source=["4", 0]),
            "6": _node("PrimitiveInt", value=8),  # V3 INT into a V1 widget input
            "7": _node("EmptyImage", width=["6", 0], height=8, batch_size=1, color=0),
            "8": _node("ImageBlur", image=["7", 0], blur_radius=1, sigma=1.0),  # V3
            "9": _save(["8", 0]),
        },
        "latent": {
            "1": _node("EmptyLatentImage", width=16, height=16, batch_size=1),
            "2": _node("LatentUpscaleBy", samples=["1", 0], upscale_method="nearest-exact", scale_by=1.0),
            "3": _node("LatentMultiply", samples=["2", 0], multiplier=1.0),  # V3
            "4": _node("SaveLatent", samples=["3", 0], filename_prefix=f"{PREFIX}/latent"),
            "5": _image(),
            "6": _node("GetImageSize", image=["5", 0]),  # V1 with V3-style INT outputs
            "7": _node("EmptyImage", width=["6", 0], height=["6", 1], batch_size=1, color=0),
            "8": _save(["7", 0]),
        },
        "files": {
            "1": _node("LoadImage", image=upload),  # its VALIDATE_INPUTS checks the file
            "2": _node("ImageScaleBy", image=["1", 0], upscale_method="nearest-exact", scale_by=1.0),
            "3": _save(["2", 0]),
            "4": _node("LoadImageMask", image=upload, channel="red"),
            "5": _node("MaskPreview", mask=["4", 0]),
            "6": _node("ImageFlip", image=["1", 0], flip_method="x-axis: vertically"),
            "7": _node("PreviewImage", images=["6", 0]),
        },
        "v3": {  # nodes of comfy_api.latest (V3) only, but for EmptyImage and the previews
            "1": _image(color=0x808080),
            "2": _node("ImageQuantize", image=["1", 0], colors=4, dither="none"),
            "3": _node("Morphology", image=["2", 0], operation="erode", kernel_size=3),
            "4": _node("SplitImageWithAlpha", image=["3", 0]),
            "5": _node("JoinImageWithAlpha", image=["4", 0], alpha=["4", 1]),
            "6": _node("SaveWEBM", images=["5", 0], filename_prefix=PREFIX, codec="vp9", fps=24.0, crf=32.0),
            "7": _node("PrimitiveFloat", value=1.5),
            "8": _node("ImageSharpen", image=["1", 0], sharpen_radius=1, sigma=["7", 0], alpha=1.0),
            "9": _node("PreviewImage", images=["8", 0]),
            "10": _node("PrimitiveBoolean", value=True),
            "11": _node("RegexReplace", string="gpu", regex_pattern="g", replace="G", case_insensitive=["10", 0]),
            "12": _node("PreviewAny", source=["11", 0]),
        },
        "camera": {  # an API node that runs offline, with a V3 validate_inputs hook
            "1": _node("KlingCameraControls", camera_control_type="simple", horizontal_movement=1.0,
                       vertical_movement=0.0, pan=0.0, tilt=0.0, roll=0.0, zoom=0.0),
            "2": _node("PreviewAny", source=["1", 0]),
            "3": _image(),
            "4": _save(["3", 0]),
        },
        "model": {
            # no checkpoint on the server: node 2 is refused (value_not_in_list), node 5's output still runs
            "1": _node("EmptyLatentImage", width=16, height=16, batch_size=1),
            "2": _node("CheckpointLoaderSimple", ckpt_name="v1-5-pruned-emaonly.safetensors"),
            "3": _node("VAEDecode", samples=["1", 0], vae=["2", 2]),
            "4": _save(["3", 0]),
            "5": _save(["6", 0]),
            "6": _image(),
        },
    }


# classes a node may be swapped for (the templates' own, and one that needs a model)
SWAP_CLASSES = ("ImageInvert", "ImageBlur", "SaveImage", "PreviewImage", "EmptyImage", "StringLength",
                "LatentMultiply", "ImageQuantize", "SaveWEBM", "KSampler", "NoSuchNode", "saveimage")


def classes_used() -> set[str]:
    """The classes the variants use, and every class with a validation hook (the unit tests use them)."""
    used = {node["class_type"] for graph in templates().values() for node in graph.values()}
    return (used | set(SWAP_CLASSES) | set(HOOKS)) - {"NoSuchNode", "saveimage"}


def seed_cases(upload: str = UPLOAD_NAME) -> list[tuple[str, dict[str, Any]]]:
    """Hand-picked variants the differential test POSTs before the generated ones: each of ComfyUI's
    error types at least once, on nodes of both APIs, whatever hypothesis happens to draw."""
    t = templates(upload)

    def changed(name: str, **changes: Any) -> dict[str, Any]:
        graph = copy.deepcopy(t[name])
        for where, value in changes.items():
            node_id, _, input_name = where.partition("__")
            node_id = node_id.lstrip("n")
            if value is _DROP:
                del graph[node_id]["inputs"][input_name]
            else:
                graph[node_id]["inputs"][input_name] = value
        return graph

    image = t["image"]
    cycle = copy.deepcopy(image)
    cycle["2"]["inputs"]["image"] = ["4", 0]
    return [
        ("seed: V3 FLOAT above max", {"prompt": changed("image", n4__blend_factor=2.0)}),
        ("seed: V1 INT below min", {"prompt": changed("image", n1__width=0)}),
        ("seed: V3 INT above max", {"prompt": changed("text", n8__blur_radius=99)}),
        ("seed: INT from text", {"prompt": changed("image", n1__width="abc")}),
        ("seed: FLOAT from 1e400", {"prompt": changed("latent", n3__multiplier="1e400")}),
        ("seed: not in a classic list", {"prompt": changed("files", n2__upscale_method="nope")}),
        ("seed: V3 COMBO unchecked", {"prompt": changed("image", n4__blend_mode="nope")}),
        ("seed: a file that is not there", {"prompt": changed("files", n1__image="missing.png")}),
        ("seed: camera all zero", {"prompt": changed("camera", n1__horizontal_movement=0.0)}),
        ("seed: required input missing", {"prompt": changed("image", n1__width=_DROP)}),
        ("seed: bad linked input", {"prompt": changed("image", n2__image=["1"])}),
        ("seed: V1 type mismatch", {"prompt": changed("latent", n8__images=["1", 0])}),
        ("seed: V3 type mismatch", {"prompt": changed("v3", n5__alpha=["1", 0])}),
        ("seed: link to a missing node", {"prompt": changed("image", n3__images=["999", 0])}),
        ("seed: inner link to a missing node", {"prompt": changed("image", n2__image=["999", 0])}),
        ("seed: slot past the end", {"prompt": changed("image", n2__image=["1", 3])}),
        ("seed: unknown node", {"prompt": {**image, "9": _node("NoSuchNode")}}),
        ("seed: no class_type", {"prompt": {**image, "9": {"inputs": {}}}}),
        ("seed: no output to run", {"prompt": image, "partial_execution_targets": []}),
        ("seed: the broken output not asked for",
         {"prompt": changed("image", n4__blend_factor=-1), "partial_execution_targets": ["3"]}),
        ("seed: a cycle", {"prompt": cycle}),
    ]


_DROP = object()


# --- values and links ---------------------------------------------------------------------

ODD = [None, True, False, {}, "", "x", [], [1, 2, 3], {"value": 1}]


def _spec(info: dict[str, Any], class_type: Any, name: str) -> Optional[list[Any]]:
    inputs = (info.get(class_type, {}) if isinstance(class_type, str) else {}).get("input") or {}
    for category in ("required", "optional"):
        spec = (inputs.get(category) or {}).get(name)
        if spec:
            return list(spec)
    return None


def value_strategy(spec: list[Any], current: Any) -> st.SearchStrategy[Any]:
    """Values for a constant input: near the template's (valid), past its bounds, text, other types,
    wrapped in ComfyUI's {"__value__": ...}, not in its options. Each kind of change is drawn first,
    so every kind comes up (hypothesis would otherwise favour the first branch of a one_of)."""
    kind = spec[0]
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    lo, hi = extra.get("min"), extra.get("max")
    changes: dict[str, st.SearchStrategy[Any]] = {
        "odd type": st.sampled_from(ODD),
        "wrapped": st.sampled_from([{"__value__": current}, {"__value__": "x"}, {"__value__": [current, 0]}]),
    }
    inside = isinstance(current, (int, float)) and not isinstance(current, bool) and math.isfinite(current) and (
        lo is None or current >= lo) and (hi is None or current <= hi)
    if kind == "INT" and inside and isinstance(current, int):
        changes["near"] = st.integers(current - 3 if lo is None else max(lo, current - 3),
                                      current + 3 if hi is None else min(hi, current + 3))
        changes["outside"] = st.sampled_from([v for v in (None if lo is None else lo - 1,
                                                          None if hi is None else hi + 1, 2**64, -2**63 - 1)
                                              if v is not None])
        changes["text"] = st.sampled_from([str(current), f" {current} ", f"{current}.5", "1e3", "abc", "nan", "inf",
                                           "0x10", "1_0", str(hi + 1) if hi is not None else "-1"])
        changes["float"] = st.sampled_from([current + 0.5, float(current), current - 0.5])
    elif kind == "FLOAT" and inside:
        low = current - 0.5 if lo is None else max(lo, current - 0.5)
        high = current + 0.5 if hi is None else min(hi, current + 0.5)
        changes["near"] = st.floats(low, high, allow_nan=False, allow_infinity=False)
        changes["outside"] = st.sampled_from([v for v in (None if lo is None else lo - 1,
                                                          None if hi is None else hi + 0.001, -1e300, 1e300)
                                              if v is not None])
        changes["text"] = st.sampled_from([repr(current), "nan", "NaN", "inf", "-inf", "1e400", "abc", ""])
        changes["int"] = st.just(int(current))
    elif kind == "BOOLEAN":
        changes["near"] = st.sampled_from([True, False])
        changes["text"] = st.sampled_from(["false", "true", "0", "", "no"])
        changes["number"] = st.sampled_from([0, 1, 0.0, 2])
    elif kind == "STRING":
        changes["near"] = st.text(max_size=6)
        changes["number"] = st.sampled_from([5, 1.5, -1, 10**30])
    elif isinstance(kind, list) or (kind == "COMBO" and isinstance(extra.get("options"), list)):
        options = kind if isinstance(kind, list) else extra["options"]
        if options:
            changes["near"] = st.sampled_from(options)
        texts = [o for o in options if isinstance(o, str)]
        changes["not listed"] = st.sampled_from(["no-such-option", "missing.png", *[o.upper() for o in texts[:3]],
                                                 *[f"{o} " for o in texts[:3]]])
        changes["file-like"] = st.sampled_from([".", "", "x.png [output]", "../x.png", "sub/x.png"])
        changes["number"] = st.sampled_from([0, 1, 1.5])
    else:  # a constant where a link belongs
        changes["constant"] = st.sampled_from([5, "x", None, 1.5])
    return st.sampled_from(sorted(changes)).flatmap(lambda change: changes[change])


def link_strategy(graph: dict[str, Any], node_id: str, current: list[Any]) -> st.SearchStrategy[Any]:
    """Every shape JSON allows for a link: wrong lengths, node ids that are not strings or not there,
    slots negative, past the end, of other types, links to itself and to other nodes."""
    source, slot = current  # a 2-list (an earlier change may have made it any 2-list)
    nodes = sorted(graph)
    shapes: list[Any] = [
        [], [source], [source, slot, 0], [[source], slot], [{"id": source}, slot], [None, slot], [True, slot],
        ["999", slot], [source, -1], [source, -2], [source, 7], [source, "0"], [source, 0.0], [source, 1.5],
        [source, None], [source, True], [source, False], [source, [0]], [node_id, 0],
    ]
    if isinstance(source, str) and source.isdigit():
        shapes += [[int(source), slot], [float(source), slot]]
    other = st.tuples(st.sampled_from(nodes), st.integers(-1, 3)).map(list)
    return st.one_of(st.sampled_from(shapes), other, st.sampled_from([5, "x"]))


def _downstream(graph: dict[str, Any], node_id: str) -> list[str]:
    """The nodes that take something from `node_id`, directly or not."""
    found: list[str] = []
    todo = [node_id]
    while todo:
        target = todo.pop()
        for other, node in graph.items():
            if other in found or not isinstance(node, dict):
                continue
            for value in (node.get("inputs") or {}).values():
                if isinstance(value, list) and len(value) == 2 and value[0] == target:
                    found.append(other)
                    todo.append(other)
                    break
    return found


# --- variants -----------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]


def _pick_input(draw: Draw, graph: dict[str, Any], linked: bool) -> Optional[tuple[str, str]]:
    choices = [(nid, name) for nid, node in sorted(graph.items()) if isinstance(node.get("inputs"), dict)
               for name, value in node["inputs"].items() if (isinstance(value, list) and len(value) == 2) == linked]
    return draw(st.sampled_from(choices)) if choices else None


def _mutate_value(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    picked = _pick_input(draw, graph, linked=False)
    if picked is None:
        return "no value"
    nid, name = picked
    spec = _spec(info, graph[nid].get("class_type"), name)
    if spec is None:
        return "no spec"
    value = draw(value_strategy(spec, graph[nid]["inputs"][name]))
    graph[nid]["inputs"][name] = value
    return f"{nid}.{name}={json.dumps(value)[:40]}"


def _mutate_link(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    picked = _pick_input(draw, graph, linked=True)
    if picked is None:
        return "no link"
    nid, name = picked
    value = draw(link_strategy(graph, nid, graph[nid]["inputs"][name]))
    graph[nid]["inputs"][name] = value
    return f"{nid}.{name}->{json.dumps(value)[:40]}"


def _link_a_value(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    picked = _pick_input(draw, graph, linked=False)
    if picked is None:
        return "no value"
    nid, name = picked
    value = [draw(st.sampled_from(sorted(graph))), draw(st.integers(0, 2))]
    graph[nid]["inputs"][name] = value
    return f"{nid}.{name}->{value}"


def _cycle(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    picked = _pick_input(draw, graph, linked=True)
    if picked is None:
        return "no link"
    nid, name = picked
    below = [d for d in _downstream(graph, nid)
             if isinstance(graph[d].get("class_type"), str) and info.get(graph[d]["class_type"], {}).get("output")]
    target = draw(st.sampled_from(below)) if below else nid
    graph[nid]["inputs"][name] = [target, 0]
    return f"cycle {nid}.{name}->{target}"


def _drop_input(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    picked = _pick_input(draw, graph, linked=draw(st.booleans()))
    if picked is None:
        return "nothing to drop"
    nid, name = picked
    del graph[nid]["inputs"][name]
    return f"drop {nid}.{name}"


def _extra_input(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    nid = draw(st.sampled_from(sorted(graph)))
    graph[nid].setdefault("inputs", {})["no_such_input"] = draw(st.sampled_from([1, "x", ["1", 0]]))
    return f"extra {nid}.no_such_input"


def _node_shape(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    nid = draw(st.sampled_from(sorted(graph)))
    change = draw(st.sampled_from(["class", "no-inputs", "no-class", "delete"]))
    if change == "class":
        graph[nid]["class_type"] = draw(st.sampled_from(SWAP_CLASSES))
    elif change == "no-inputs":
        graph[nid].pop("inputs", None)
    elif change == "no-class":
        graph[nid].pop("class_type", None)
    else:
        del graph[nid]
    return f"{change} {nid}"


def _another_output(draw: Draw, graph: dict[str, Any], info: dict[str, Any]) -> str:
    source = [draw(st.sampled_from([*sorted(graph), "999"])), draw(st.integers(-1, 2))]
    kind = draw(st.sampled_from(["SaveImage", "PreviewImage", "PreviewAny", "MaskPreview"]))
    name = {"SaveImage": "images", "PreviewImage": "images", "PreviewAny": "source", "MaskPreview": "mask"}[kind]
    inputs: dict[str, Any] = {name: source}
    if kind == "SaveImage":
        inputs["filename_prefix"] = PREFIX
    graph["90"] = {"class_type": kind, "inputs": inputs}
    return f"output 90 {kind}<-{source}"


MUTATIONS = [_mutate_value, _mutate_value, _mutate_value, _mutate_link, _mutate_link, _link_a_value, _cycle,
             _drop_input, _extra_input, _node_shape, _another_output]


def variants(info: dict[str, Any], upload: str = UPLOAD_NAME) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(what was changed, a POST /prompt body)."""

    @st.composite
    def variant(draw: Draw) -> tuple[str, dict[str, Any]]:
        all_templates = templates(upload)
        name = draw(st.sampled_from(sorted(all_templates)))
        graph = copy.deepcopy(all_templates[name])
        log = [name]
        for _ in range(draw(st.sampled_from([1, 2, 3]))):
            if not graph:
                break
            mutation = draw(st.sampled_from(MUTATIONS))
            log.append(mutation(draw, graph, info))
        body: dict[str, Any] = {"prompt": graph}
        if graph and draw(st.sampled_from([False] * 9 + [True])):
            outputs = sorted(n for n, node in graph.items()
                             if isinstance(node.get("class_type"), str)
                             and info.get(node["class_type"], {}).get("output_node"))
            targets = draw(st.lists(st.sampled_from([*outputs, "999"]), max_size=2, unique=True))
            body["partial_execution_targets"] = targets
            log.append(f"targets {targets}")
        return " / ".join(log), body

    return variant()


# --- predictions and answers ----------------------------------------------------------------


def predict(body: dict[str, Any], info: dict[str, Any]) -> WorkflowReport:
    """What `check --workflow` says of a POST /prompt body (its loader, then its validation)."""
    request = prompt_request(copy.deepcopy(body))
    return validate(request.graph, info, partial_execution_targets=request.partial_execution_targets)


def _shape(status: int, body: Any, skip: set[str]) -> dict[str, Any]:
    """The parts of an answer that do not depend on the order of ComfyUI's sets: the status, the
    error's type (and text, for invalid_prompt), and per node the errors' types and, but for
    exceptions (whose input and text follow the order), their input names and details."""
    body = body if isinstance(body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    shape: dict[str, Any] = {"status": status, "error": error.get("type")}
    if error.get("type") == "invalid_prompt":
        shape["invalid_prompt"] = [error.get("message"), error.get("details")]
    nodes: dict[str, Any] = {}
    for node_id, entry in (body.get("node_errors") or {}).items():
        if node_id in skip:
            continue
        items = []
        for e in entry.get("errors", []):
            if e.get("type") in EXCEPTIONS:
                items.append(["exception"])
            else:
                items.append([e.get("type"), e.get("message"), e.get("details"),
                              (e.get("extra_info") or {}).get("input_name")])
        nodes[str(node_id)] = [entry.get("class_type"), sorted(items, key=json.dumps)]
    shape["node_errors"] = nodes
    return shape


def differences(report: WorkflowReport, status: int, body: Any) -> list[str]:
    """Where the prediction and ComfyUI's answer differ, leaving out what another order of ComfyUI's
    sets could change (validation.py names it)."""
    skip = set(report.order_dependent_nodes)
    predicted = _shape(report.comfyui_status, report.comfyui_response, skip)
    answered = _shape(status, body, skip)
    certain_good = set(report.good_outputs) - set(report.order_dependent_outputs)
    if report.comfyui_status == 200 and not certain_good and status == 400:
        predicted["status"], predicted["error"] = 400, answered["error"]  # a refusal the order may bring
    found = []
    for key in sorted(set(predicted) | set(answered)):
        if predicted.get(key) != answered.get(key):
            found.append(f"{key}: check predicts {json.dumps(predicted.get(key))[:600]}, "
                         f"ComfyUI answered {json.dumps(answered.get(key))[:600]}")
    return found


def without_tracebacks(body: Any) -> Any:
    """An answer without the tracebacks ComfyUI adds to exceptions (they name its files)."""
    if isinstance(body, dict):
        return {k: without_tracebacks(v) for k, v in body.items() if k != "traceback"}
    if isinstance(body, list):
        return [without_tracebacks(v) for v in body]
    return body


# --- the live server ----------------------------------------------------------------------


def http(method: str, url: str, body: Optional[bytes] = None, content_type: str = "application/json",
         timeout: float = 60.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read(64 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(64 * 1024 * 1024)


def post_prompt(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST /prompt: (status, the JSON answer, or its text when it is not JSON)."""
    status, raw = http("POST", f"{url}/prompt", json.dumps(body).encode())
    try:
        return status, json.loads(raw)  # ComfyUI writes NaN and Infinity bare; Python reads them
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def settle(url: str) -> None:
    """Nothing piles up: what is queued goes, what runs is interrupted."""
    http("POST", f"{url}/queue", b'{"clear": true}')
    http("POST", f"{url}/interrupt", b"{}")


def upload_image(url: str, name: str, data: bytes) -> None:
    boundary = uuid.uuid4().hex
    parts = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
             f"Content-Type: image/png\r\n\r\n").encode() + data + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
        f"--{boundary}--\r\n").encode()
    status, raw = http("POST", f"{url}/upload/image", parts, f"multipart/form-data; boundary={boundary}")
    if status != 200:
        raise RuntimeError(f"POST /upload/image answered {status}: {raw[:200]!r}")


def wait_for_history(url: str, prompt_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The /history entry of a prompt once it has run (within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, raw = http("GET", f"{url}/history/{prompt_id}", timeout=10.0)
        if status == 200:
            entry = json.loads(raw).get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return dict(entry)
        time.sleep(0.2)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


# --- the replay file ------------------------------------------------------------------------


def trimmed_object_info(info: dict[str, Any]) -> dict[str, Any]:
    return {name: info[name] for name in sorted(classes_used()) if name in info}


def write_replay(path: Path, info: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    document = {
        "comfyui": "0.3.64",
        "about": "POST /prompt bodies (tests/support/workflow_diff.py) and what ComfyUI 0.3.64 answered, "
                 "tracebacks left out; object_info holds the classes they use",
        "object_info": trimmed_object_info(info),
        "cases": cases,
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def read_replay(path: Path = REPLAY) -> dict[str, Any]:
    return dict(json.loads(gzip.decompress(path.read_bytes())))


# the keys of an /object_info entry that the classic node_info writes only when they are set
MARKER_KEYS = ("api_node", "deprecated", "experimental", "output_tooltips")


def write_semantics(path: Path, semantics: dict[str, Any], info: dict[str, Any]) -> None:
    """tests/support/comfyui_node_semantics.py's output (hooks only where there is one) with the marker
    keys of each class's /object_info entry (what tells the two node APIs apart from outside), one class a
    line."""
    lines = []
    for name in sorted(semantics):
        entry = {"api": semantics[name]["api"], "markers": [k for k in MARKER_KEYS if k in info.get(name, {})]}
        if semantics[name].get("hook"):
            entry["hook"] = semantics[name]["hook"]
        lines.append(json.dumps({name: entry}, sort_keys=True))
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n")


def read_semantics(path: Path = SEMANTICS) -> dict[str, Any]:
    return {name: entry for item in json.loads(path.read_text()) for name, entry in item.items()}
