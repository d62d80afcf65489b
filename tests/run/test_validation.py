"""Suite validation before any work: names, options, settings, fault models against formats, cell counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from resbench.config import Suite, load_suite, parse_suite
from resbench.errors import UsageError
from resbench.run.validation import SuiteSize, check_suite, resolve_fault_models

WriteSuite = Callable[..., Path]


@pytest.mark.usefixtures("test_items")
def test_unknown_name_gets_close_matches(write_suite: WriteSuite, valid_suite: Path) -> None:
    path = write_suite(valid_suite.read_text().replace("[dummy-flip]", "[dummy-flop]"), name="typo.yaml")
    suite = load_suite(path)
    with pytest.raises(UsageError) as raised:
        check_suite(suite, str(path))
    assert str(raised.value) == (
        f"{path}: faults[0]: unknown fault model 'dummy-flop' (did you mean 'dummy-flip'?); available: dummy-flip"
    )


@pytest.mark.usefixtures("test_items")
def test_unknown_option_of_named_item(write_suite: WriteSuite, valid_suite: Path) -> None:
    path = write_suite(valid_suite.read_text().replace("bound: 2.5", "bonud: 2.5"), name="option.yaml")
    with pytest.raises(UsageError) as raised:
        check_suite(load_suite(path), str(path))
    assert str(raised.value) == f"{path}: methods[1] (dummy-clip): bonud: unknown option (allowed: bound)"


@pytest.mark.usefixtures("test_items")
def test_out_of_range_option_of_named_item(write_suite: WriteSuite, valid_suite: Path) -> None:
    path = write_suite(valid_suite.read_text().replace("bound: 2.5", "bound: 250"), name="range.yaml")
    with pytest.raises(UsageError) as raised:
        check_suite(load_suite(path), str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: methods[1] (dummy-clip): bound: ")
    assert "(allowed range: > 0 and <= 100)" in message


@pytest.mark.usefixtures("test_items")
def test_pattern_name_out_of_range(write_suite: WriteSuite, valid_suite: Path) -> None:
    path = write_suite(valid_suite.read_text().replace("dummy-q3.4", "dummy-q40.4"), name="pattern.yaml")
    with pytest.raises(UsageError) as raised:
        check_suite(load_suite(path), str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: formats[1] (dummy-q40.4): integer_bits: ")
    assert "(allowed range: >= 0 and <= 31)" in message


@pytest.mark.usefixtures("test_items")
def test_all_unknown_names_reported_at_once(write_suite: WriteSuite) -> None:
    path = write_suite(
        "methods: [nope]\nmodels: [nada]\ndatasets: [dummy-blobs]\nformats: [dummy-fp]\nfaults: [dummy-flip]\n"
        "executor: dummy-inline\n"
    )
    with pytest.raises(UsageError) as raised:
        check_suite(load_suite(path), str(path))
    lines = str(raised.value).splitlines()
    assert lines[0].startswith(f"{path}: methods[0]: unknown method 'nope'")
    assert lines[1].startswith(f"{path}: models[0]: unknown model 'nada'")
    assert len(lines) == 2


def test_training_and_fault_space_options_checked_before_any_work(write_suite: WriteSuite) -> None:
    """Misspelt or out-of-range training and fault-space options are found by ``validate``, not mid-run."""
    path = write_suite("training: {epochz: 3, lr: 50}\nfault_space: {bogus: 1}\n")
    with pytest.raises(UsageError) as raised:
        check_suite(load_suite(path), str(path))
    lines = str(raised.value).splitlines()
    assert lines[0].startswith(f"{path}: fault_space: bogus: unknown option")
    assert any(line.startswith(f"{path}: training: epochz: unknown option") for line in lines)
    assert any(line.startswith(f"{path}: training: lr:") and "<= 10.0" in line for line in lines)
    assert len(lines) == 3


def test_default_suite_names_resolve_with_the_builtin_plugins() -> None:
    """The defaults of :class:`Suite` name items the built-in plugins register."""
    check_suite(Suite(), "defaults")


SHIPPED_SUITES = sorted(
    [
        *(Path(__file__).resolve().parents[2] / "benchmarks").glob("*.yaml"),
        *(Path(__file__).resolve().parents[2] / "resbench" / "suites").glob("*.yaml"),
    ]
)


@pytest.mark.parametrize("path", SHIPPED_SUITES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_shipped_suites_are_valid(path: Path) -> None:
    check_suite(load_suite(path), str(path))


def test_a_fault_model_is_checked_against_every_format_and_each_problem_said_once() -> None:
    faults = [{"name": "bitflip", "options": {"bits": [12]}}, {"name": "act-single", "options": {"target": "weights"}}]
    suite = parse_suite({"formats": ["fp32", "q2.5"], "faults": faults}, "t")
    with pytest.raises(UsageError) as raised:
        check_suite(suite, "t")
    lines = str(raised.value).splitlines()
    bitflip = [line for line in lines if line.startswith("t: fault model bitflip[")]
    assert len(bitflip) == 1 and "q2.5" in bitflip[0] and "bit 12 outside 0..7" in bitflip[0]  # fp32 has bit 12
    assert sum("act-single supports the activations target only" in line for line in lines) == 1


def test_suite_size_counts_a_faulty_cell_per_ber_and_one_for_one_fault_per_inference() -> None:
    suite = parse_suite({"methods": ["none", "ranger"], "formats": ["fp32", "fp16", "q15.16"],
                         "faults": ["bitflip", "act-single"], "bers": [1e-6, 1e-5, 1e-4]}, "t")
    size = SuiteSize(suite)
    assert (size.groups, size.faulty, size.clean) == (6, 3 + 1, 2)
    assert size.cells == 6 * (4 + 2)


def test_fault_models_are_resolved_once_per_label_with_their_options() -> None:
    suite = parse_suite({"faults": ["bitflip", {"name": "bitflip-count", "options": {"bits": ["sign"]}}]}, "t")
    models = resolve_fault_models(suite)
    assert [model.name for model in models.values()] == ["bitflip", "bitflip-count"]
    assert list(models.values())[1].options.bits == ("sign",)
