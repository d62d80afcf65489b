"""Options of plugin items: unknown keys and out-of-range values are refused with key and range."""

from __future__ import annotations

import pydantic
import pytest

from resbench.errors import UsageError
from resbench.options import NoOptions, Options, describe_options, validate_options


class ClipOptions(Options):
    """Options of a clipping activation."""

    bound: float = pydantic.Field(default=1.0, gt=0, le=100, description="activation bound")
    per_neuron: bool = pydantic.Field(default=False, description="one bound per neuron")
    preset: str = "v1"


def test_defaults_and_values() -> None:
    assert validate_options(ClipOptions, {}, "clip") == ClipOptions()
    options = validate_options(ClipOptions, {"bound": 2.5, "per_neuron": True}, "clip")
    assert isinstance(options, ClipOptions)
    assert (options.bound, options.per_neuron) == (2.5, True)


def test_unknown_key_refused_naming_it_and_the_allowed_keys() -> None:
    with pytest.raises(UsageError) as raised:
        validate_options(ClipOptions, {"bound": 2.0, "bnd": 3.0}, "methods[0] (clip)")
    assert str(raised.value) == "methods[0] (clip): bnd: unknown option (allowed: bound, per_neuron, preset)"


def test_item_without_options_refuses_any_key() -> None:
    with pytest.raises(UsageError, match=r"^fp32: bits: unknown option \(allowed: none, this item takes no options\)$"):
        validate_options(NoOptions, {"bits": 8}, "fp32")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "greater than 0"),
        (-1.5, "greater than 0"),
        (101, "less than or equal to 100"),
    ],
)
def test_out_of_range_value_names_key_and_range(value: float, problem: str) -> None:
    with pytest.raises(UsageError) as raised:
        validate_options(ClipOptions, {"bound": value}, "clip")
    message = str(raised.value)
    assert message.startswith("clip: bound: ")
    assert problem in message
    assert "(allowed range: > 0 and <= 100)" in message
    assert f"got {value!r}" in message


def test_wrong_type_names_key() -> None:
    with pytest.raises(UsageError, match=r"^clip: bound: Input should be a valid number.*got 'high'$"):
        validate_options(ClipOptions, {"bound": "high"}, "clip")


def test_every_problem_reported_one_per_line() -> None:
    with pytest.raises(UsageError) as raised:
        validate_options(ClipOptions, {"bound": 0, "nope": 1}, "clip")
    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("clip: bound: ") for line in lines)
    assert any(line.startswith("clip: nope: unknown option") for line in lines)


def test_options_are_frozen() -> None:
    options = ClipOptions()
    with pytest.raises(pydantic.ValidationError):
        options.bound = 3.0


def test_describe_options_lists_defaults_and_ranges() -> None:
    described = {option["name"]: option for option in describe_options(ClipOptions)}
    assert list(described) == ["bound", "per_neuron", "preset"]
    assert described["bound"] == {
        "name": "bound",
        "type": "float",
        "default": 1.0,
        "required": False,
        "description": "activation bound",
        "range": "> 0 and <= 100",
    }
    assert described["preset"]["default"] == "v1"
    assert describe_options(NoOptions) == []
