"""Registries: unique names, helpful answers to unknown names, attribution, name patterns."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from resbench.errors import UsageError
from resbench.options import NoOptions, Options
from resbench.registry import DuplicateNameError, Registry


class FixedPointOptions(Options):
    """``qM.N``: M integer bits and N fraction bits."""

    integer_bits: int = pydantic.Field(default=15, ge=0, le=31)
    fraction_bits: int = pydantic.Field(default=16, ge=0, le=31)


def fp32() -> None:
    """IEEE 754 single precision.

    Longer explanation that is not part of the listing.
    """


def fp16() -> None:
    """IEEE 754 half precision."""


def fixed_point() -> None:
    """Two's complement fixed point."""


@pytest.fixture
def formats() -> Registry[Any]:
    registry: Registry[Any] = Registry("format")
    registry.add("fp32", fp32, "core")
    registry.add("fp16", fp16, "core")
    pattern = r"q(?P<integer_bits>\d+)\.(?P<fraction_bits>\d+)"
    registry.add("qM.N", fixed_point, "core", options=FixedPointOptions, pattern=pattern)
    return registry


def test_duplicate_name_refused_naming_both_plugins(formats: Registry[Any]) -> None:
    with pytest.raises(DuplicateNameError, match=r"format 'fp32' registered twice: by plugin 'core' and by 'other'"):
        formats.add("fp32", fp16, "other")
    assert formats.get("fp32").item is fp32


def test_entry_remembers_plugin_description_and_options(formats: Registry[Any]) -> None:
    formats.add("bf16", fp16, "my-plugin", description="bfloat16")
    entry = formats.get("bf16")
    assert (entry.name, entry.plugin, entry.description) == ("bf16", "my-plugin", "bfloat16")
    assert entry.options is NoOptions
    assert formats.get("fp32").description == "IEEE 754 single precision."
    assert formats.get("qM.N").options is FixedPointOptions


def test_options_default_to_item_options_attribute() -> None:
    class Clamp:
        """Clamp to a bound."""

        Options = FixedPointOptions

    registry: Registry[Any] = Registry("activation")
    assert registry.add("clamp", Clamp, "core").options is FixedPointOptions


def test_unknown_name_gives_close_matches_and_the_list(formats: Registry[Any]) -> None:
    with pytest.raises(UsageError) as raised:
        formats.get("fp31")
    message = str(raised.value)
    assert message.startswith("unknown format 'fp31' (did you mean 'fp32'")
    assert message.endswith("available: fp16, fp32, qM.N")
    assert "\n" not in message


def test_unknown_name_without_close_match_still_lists(formats: Registry[Any]) -> None:
    message = formats.unknown_name_message("zzzz")
    assert "did you mean" not in message
    assert message == "unknown format 'zzzz'; available: fp16, fp32, qM.N"


def test_empty_registry_says_nothing_is_registered() -> None:
    registry: Registry[Any] = Registry("method")
    assert registry.unknown_name_message("none") == "unknown method 'none'; available: (none registered)"


def test_pattern_resolves_names_to_options(formats: Registry[Any]) -> None:
    entry, implied = formats.resolve("q3.4")
    assert entry.name == "qM.N"
    assert implied == {"integer_bits": 3, "fraction_bits": 4}
    assert entry.make_options(implied) == FixedPointOptions(integer_bits=3, fraction_bits=4)


def test_exact_name_wins_over_pattern(formats: Registry[Any]) -> None:
    formats.add("q7.8", fp16, "core")
    entry, implied = formats.resolve("q7.8")
    assert (entry.item, implied) == (fp16, {})


def test_pattern_must_match_whole_name(formats: Registry[Any]) -> None:
    with pytest.raises(UsageError, match=r"unknown format 'q3\.4x'"):
        formats.resolve("q3.4x")


def test_pattern_optional_group_leaves_default() -> None:
    registry: Registry[Any] = Registry("format")
    registry.add("intN", fp16, "core", pattern=r"int(?P<bits>\d+)?")
    assert registry.resolve("int")[1] == {}
    assert registry.resolve("int4")[1] == {"bits": 4}


def test_pattern_out_of_range_value_is_rejected_by_options(formats: Registry[Any]) -> None:
    entry, implied = formats.resolve("q40.4")
    with pytest.raises(UsageError, match=r"integer_bits: .*less than or equal to 31 \(allowed range: >= 0 and <= 31\)"):
        entry.make_options(implied)


def test_get_does_not_resolve_patterns(formats: Registry[Any]) -> None:
    with pytest.raises(UsageError):
        formats.get("q3.4")


def test_iteration_sorted_and_membership(formats: Registry[Any]) -> None:
    assert [entry.name for entry in formats] == ["fp16", "fp32", "qM.N"]
    assert formats.names() == ["fp16", "fp32", "qM.N"]
    assert "fp16" in formats
    assert "q3.4" not in formats
    assert len(formats) == 3
