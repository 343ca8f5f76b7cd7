"""Rebuild fact dataclasses from their JSON form (recorded facts, remote hosts)."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_jsonable(cls: type[T], data: Any) -> T:
    """Inverse of gpuhost.model.to_jsonable for dataclasses; unknown keys are ignored."""
    return typing.cast(T, _convert(cls, data))


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for option in options:
            try:
                return _convert(option, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, tuple):
        (item_type, *_rest) = typing.get_args(tp) or (Any,)
        return [_convert(item_type, v) for v in value]
    if origin is dict:
        _key, item_type = typing.get_args(tp) or (str, Any)
        return {k: _convert(item_type, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__} expects an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs = {
            f.name: _convert(hints[f.name], value[f.name])
            for f in dataclasses.fields(tp)
            if f.init and f.name in value
        }
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value
