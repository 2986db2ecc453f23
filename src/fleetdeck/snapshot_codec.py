"""Snapshots as JSON and back: what a socket sends to a view in another process.

`to_json` turns a `FleetSnapshot`, `TaskDetail` or `Timeline` (or any of the
plain dataclasses they hold) into JSON-ready values: dataclasses become objects
keyed by field name, enum members their values, tuples lists. `from_json` reads
them back by the dataclass's field types, so `from_json(cls, to_json(x)) == x`.

The types are read from the dataclasses themselves, so a field added to a
snapshot travels without a change here. A value that does not fit its field's
type raises `SnapshotDecodeError`, naming the field.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_NONE = type(None)


class SnapshotDecodeError(ValueError):
    """JSON that does not read as the snapshot type asked for."""


def to_json(value: Any) -> Any:
    """`value` (a snapshot dataclass, or anything one holds) as JSON-ready values."""
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, str | int | float):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: to_json(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    raise TypeError(f"cannot encode {type(value).__name__} in a snapshot")


def from_json(cls: type[T], data: Any) -> T:
    """The `cls` instance `data` (from `to_json`) holds."""
    value: T = _decode(cls, data, cls.__name__)
    return value


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


@functools.cache
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    """Each field's name and resolved type (the annotations are strings)."""
    hints = typing.get_type_hints(cls)
    return tuple((field.name, hints[field.name]) for field in dataclasses.fields(cls))


def _decode(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        options = typing.get_args(tp)
        if data is None and _NONE in options:
            return None
        kept = [option for option in options if option is not _NONE]
        if len(kept) == 1:
            return _decode(kept[0], data, where)
        raise SnapshotDecodeError(f"{where}: cannot decode a union of {kept}")
    if origin is typing.Literal:
        if data not in typing.get_args(tp):
            raise SnapshotDecodeError(f"{where}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin is tuple:
        args = typing.get_args(tp)
        items = _list(data, where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item, f"{where}[{i}]") for i, item in enumerate(items))
        if len(items) != len(args):
            raise SnapshotDecodeError(f"{where}: expected {len(args)} items, got {len(items)}")
        return tuple(
            _decode(arg, item, f"{where}[{i}]")
            for i, (arg, item) in enumerate(zip(args, items, strict=True))
        )
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(data, dict):
            raise SnapshotDecodeError(f"{where}: expected an object, got {_kind(data)}")
        return {
            _decode(key_type, key, where): _decode(value_type, item, f"{where}[{key!r}]")
            for key, item in data.items()
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise SnapshotDecodeError(f"{where}: expected an object, got {_kind(data)}")
        values = {}
        for name, field_type in _field_types(tp):
            if name not in data:
                raise SnapshotDecodeError(f"{where}: missing {name!r}")
            values[name] = _decode(field_type, data[name], f"{where}.{name}")
        return tp(**values)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise SnapshotDecodeError(f"{where}: {data!r} is not a {tp.__name__}") from None
    if tp is float:
        # JSON writes 2.0 as 2.0, but a float field may hold an int (a count of seconds).
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data) if isinstance(data, int) else data
        raise SnapshotDecodeError(f"{where}: expected a number, got {_kind(data)}")
    if tp is int or tp is str or tp is bool:
        # bool is an int in Python; JSON keeps them apart, and so does this.
        if type(data) is tp:
            return data
        raise SnapshotDecodeError(f"{where}: expected {tp.__name__}, got {_kind(data)}")
    raise SnapshotDecodeError(f"{where}: no decoding for {tp!r}")


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list | tuple):
        raise SnapshotDecodeError(f"{where}: expected a list, got {_kind(data)}")
    return list(data)


def _kind(data: Any) -> str:
    return "null" if data is None else type(data).__name__
