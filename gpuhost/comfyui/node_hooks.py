"""The validation hooks of ComfyUI 0.3.64's own nodes, which /object_info does not publish.

POST /prompt runs a node's `VALIDATE_INPUTS` (the classic API) or `validate_inputs` (the V3
`comfy_api.latest` API) after its input checks. Ten of 0.3.64's nodes have one (found by asking every
class in NODE_CLASS_MAPPINGS; `tests/fixtures/comfyui/node-semantics-0.3.64.json` records the answer
and a unit test holds this table to it). Each mirror below is the hook's own code, given what ComfyUI
gives it: the values after the input conversions, None for a linked input, nothing for a missing one
(then the call fails with ComfyUI's TypeError), and `input_types` (the linked outputs' types) where
the hook asks for them. An exception a hook raises is raised here too, with the same text.

Seven hooks check that a file exists on the server's disk (`folder_paths.exists_annotated_filepath`).
From outside, the node's own list of files (its options in /object_info) stands for that disk; a name
that list cannot settle (another folder through `[output]`/`[temp]`, an absolute path, one that climbs
out through `..`, or a node that publishes no list) is taken as present and noted as unverified.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

HookResult = Union[bool, str]


@dataclass
class HookContext:
    """What a hook may look at besides its arguments: the input's list of files, and where to note a
    file the list could not settle."""

    listing: Optional[Sequence[Any]]
    unverified: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Hook:
    qualname: str  # as ComfyUI's TypeError names the function
    args: tuple[str, ...]  # inspect.getfullargspec(...).args, the class argument included
    varkw: bool
    file_input: str  # the input whose list of files stands for the disk ("" for none)
    run: Callable[[HookContext, dict[str, Any]], HookResult]


def _exists_annotated_filepath(context: HookContext, name: Any) -> bool:
    """folder_paths.exists_annotated_filepath, with the node's file list for os.path.exists."""
    base = "input"
    if name.endswith("[output]"):  # a non-string name fails here, as in ComfyUI (AttributeError)
        base, name = "output", name[:-9]
    elif name.endswith("[input]"):
        name = name[:-8]
    elif name.endswith("[temp]"):
        base, name = "temp", name[:-7]
    normal = posixpath.normpath(name) if isinstance(name, str) else ""
    if normal == ".":  # the folder itself exists
        return True
    if base != "input" or name.startswith("/") or normal == ".." or normal.startswith("../") or context.listing is None:
        context.unverified.append(f"{name!r} in the server's {base} folder")
        return True
    return name in context.listing


def _file_hook(argument: str, what: str) -> Callable[[HookContext, dict[str, Any]], HookResult]:
    def run(context: HookContext, kwargs: dict[str, Any]) -> HookResult:
        name = kwargs[argument]
        if not _exists_annotated_filepath(context, name):
            return f"Invalid {what} file: {name}"
        return True

    return run


def _kling_camera_controls(context: HookContext, kwargs: dict[str, Any]) -> HookResult:
    names = ("horizontal_movement", "vertical_movement", "pan", "tilt", "roll", "zoom")
    if not any(not math.isclose(kwargs[name], 0.0) for name in names):
        return "Invalid camera control configs: at least one of the values must be non-zero"
    return True


def _validate_aspect_ratio(aspect_ratio: Any, minimum: float, maximum: float, minimum_text: str,
                           maximum_text: str) -> Any:
    """comfy_api_nodes.apinode_utils.validate_aspect_ratio."""
    numbers = aspect_ratio.split(":")
    if len(numbers) != 2:
        raise TypeError(f"Aspect ratio must be in the format X:Y, such as 16:9, but was {aspect_ratio}.")
    try:
        numerator = int(numbers[0])
        denominator = int(numbers[1])
    except ValueError as exc:
        raise TypeError(
            f"Aspect ratio must contain numbers separated by ':', such as 16:9, but was {aspect_ratio}."
        ) from exc
    ratio = numerator / denominator
    if not math.isclose(ratio, minimum) or not math.isclose(ratio, maximum):
        if ratio < minimum:
            raise TypeError(f"Aspect ratio cannot reduce to any less than {minimum_text} ({minimum}), "
                            f"but was {aspect_ratio} ({ratio}).")
        if ratio > maximum:
            raise TypeError(f"Aspect ratio cannot reduce to any greater than {maximum_text} ({maximum}), "
                            f"but was {aspect_ratio} ({ratio}).")
    return aspect_ratio


def _flux_pro_ultra(context: HookContext, kwargs: dict[str, Any]) -> HookResult:
    try:
        _validate_aspect_ratio(kwargs["aspect_ratio"], 1 / 4, 4 / 1, "1:4", "4:1")
    except Exception as exc:  # the hook turns every failure into its message
        return str(exc)
    return True


def _tripo_conversion(context: HookContext, kwargs: dict[str, Any]) -> HookResult:
    if kwargs["input_types"]["original_model_task_id"] not in ("MODEL_TASK_ID", "RIG_TASK_ID", "RETARGET_TASK_ID"):
        return "original_model_task_id must be MODEL_TASK_ID, RIG_TASK_ID or RETARGET_TASK_ID type"
    return True


HOOKS: dict[str, Hook] = {
    "LoadImage": Hook("LoadImage.VALIDATE_INPUTS", ("s", "image"), False, "image", _file_hook("image", "image")),
    "LoadImageMask": Hook("LoadImageMask.VALIDATE_INPUTS", ("s", "image"), False, "image",
                          _file_hook("image", "image")),
    # both inherit LoadImage's method; LoadImageOutput's list is fetched by the browser, WebcamCapture has none
    "LoadImageOutput": Hook("LoadImage.VALIDATE_INPUTS", ("s", "image"), False, "image",
                            _file_hook("image", "image")),
    "WebcamCapture": Hook("LoadImage.VALIDATE_INPUTS", ("s", "image"), False, "image", _file_hook("image", "image")),
    "LoadAudio": Hook("LoadAudio.VALIDATE_INPUTS", ("s", "audio"), False, "audio", _file_hook("audio", "audio")),
    "LoadLatent": Hook("LoadLatent.VALIDATE_INPUTS", ("s", "latent"), False, "latent",
                       _file_hook("latent", "latent")),
    "LoadVideo": Hook("LoadVideo.validate_inputs", ("s", "file"), False, "file", _file_hook("file", "video")),
    "KlingCameraControls": Hook(
        "KlingCameraControls.validate_inputs",
        ("cls", "horizontal_movement", "vertical_movement", "pan", "tilt", "roll", "zoom"), False, "",
        _kling_camera_controls,
    ),
    "FluxProUltraImageNode": Hook("FluxProUltraImageNode.validate_inputs", ("cls", "aspect_ratio"), False, "",
                                  _flux_pro_ultra),
    "TripoConversionNode": Hook("TripoConversionNode.VALIDATE_INPUTS", ("cls", "input_types"), False, "",
                                _tripo_conversion),
}


def call_hook(hook: Hook, context: HookContext, kwargs: dict[str, Any]) -> HookResult:
    """The call ComfyUI makes, with Python's own complaint when an argument is missing."""
    if not hook.varkw:
        missing = [name for name in hook.args[1:] if name not in kwargs]
        if missing:
            quoted = [f"'{name}'" for name in missing]
            listed = " and ".join(quoted) if len(quoted) <= 2 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]
            plural = "argument" if len(missing) == 1 else "arguments"
            raise TypeError(f"{hook.qualname}() missing {len(missing)} required positional {plural}: {listed}")
    return hook.run(context, kwargs)
