"""JSON encoding of job arguments and results.

Arguments are checked strictly before anything is stored: a value that would
not come back from JSON as the same value fails at enqueue with a
``TypeError`` that names the task and the argument, never later in the
worker. Tuples are the one tolerated change, as they come back as lists.
Pickle is never used, so write access to the queue can never mean code
execution.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

_dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


def encode_arguments(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Return the JSON text that carries ``args`` and ``kwargs`` of one job.

    :raises TypeError: if an argument holds a value JSON cannot carry; the
        message names the task, the argument and the offending value.
    """
    for index, value in enumerate(args):
        _check(value, task, f"positional argument {index}")
    for name, value in kwargs.items():
        _check(value, task, f"argument {name!r}")

    return _dumps({"args": list(args), "kwargs": dict(kwargs)})


def decode_arguments(text: str) -> tuple[list[Any], dict[str, Any]]:
    data = json.loads(text)

    return data["args"], data["kwargs"]


def encode_result(task: str, value: Any) -> str:
    """Return the JSON text of a task's return value.

    :raises TypeError: if the value cannot be carried by JSON.
    """
    _check(value, task, "return value")

    return _dumps(value)


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _check(value: Any, task: str, where: str, path: str = "") -> None:
    """Walk ``value`` and raise ``TypeError`` at the first part JSON would drop
    or change (a set, an object, a non-string key, ``nan``)."""
    if value is None or isinstance(value, (str, bool, int)):
        return

    if isinstance(value, float):
        if not math.isfinite(value):
            _refuse(task, where, path, value, "is not a finite number")
        return

    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, task, where, f"{path}[{index}]")
        return

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                _refuse(task, where, path, key, "is a dictionary key that is not a str")
            _check(item, task, where, f"{path}[{key!r}]")
        return

    _refuse(task, where, path, value, f"is of type {type(value).__name__!r}")


def _refuse(task: str, where: str, path: str, value: Any, why: str) -> None:
    place = f"{where}{path}" if path else where
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."

    raise TypeError(
        f"Task {task!r}: {place} cannot be stored as JSON: {shown} {why}. "
        "Pass only None, bool, int, finite float, str, and lists, tuples "
        "and str-keyed dicts of those; for other objects pass an id or a "
        "plain representation and load the object inside the task."
    )
