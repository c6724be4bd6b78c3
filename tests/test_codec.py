from __future__ import annotations

import math
from datetime import date

import pytest

from flask_offload.codec import decode_arguments, encode_arguments, encode_result


def test_arguments_round_trip_through_json() -> None:
    text = encode_arguments("t", (1, "ü", [1.5, None], {"a": True}), {"k": (1, 2)})

    assert decode_arguments(text) == ([1, "ü", [1.5, None], {"a": True}], {"k": [1, 2]})


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((date(2026, 1, 1),), {}, "positional argument 0"),
        ((), {"when": {1, 2}}, "argument 'when'"),
        ((1, {"a": [object()]}), {}, "positional argument 1['a'][0]"),
        ((), {"mapping": {1: "one"}}, "argument 'mapping'"),
        ((math.nan,), {}, "positional argument 0"),
    ],
)
def test_a_value_json_cannot_carry_is_refused_naming_task_and_argument(
    args: tuple[object, ...], kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(TypeError) as raised:
        encode_arguments("reports.build", args, kwargs)

    message = str(raised.value)
    assert message.startswith("Task 'reports.build': ")
    assert named in message
    assert "cannot be stored as JSON" in message


def test_a_result_json_cannot_carry_is_refused() -> None:
    with pytest.raises(TypeError, match="return value cannot be stored as JSON"):
        encode_result("t", object())
