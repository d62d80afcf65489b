"""Suites: read from YAML, validated by pydantic, and every named item checked against the registries."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from resbench.config import SUITE_VERSION, ComponentSpec, Suite, TrialPolicy, load_suite, parse_suite
from resbench.errors import UsageError
from resbench.run.validation import check_suite

WriteSuite = Callable[..., Path]


def test_defaults_form_a_complete_suite() -> None:
    suite = Suite()
    assert suite.version == SUITE_VERSION == 1
    assert [spec.name for spec in suite.methods] == ["none"]
    assert suite.bers == [1e-6, 1e-5, 1e-4]
    assert suite.trials == TrialPolicy(trials=20)
    assert not suite.trials.adaptive
    assert suite.executor.name == "local"


@pytest.mark.usefixtures("test_items")
def test_valid_suite_file_accepted(valid_suite: Path) -> None:
    suite = load_suite(valid_suite)
    check_suite(suite, str(valid_suite))
    assert suite.name == "tiny"
    assert [spec.label for spec in suite.methods] == ["dummy-none", "dummy-clip[bound=2.5]"]
    assert suite.methods[1] == ComponentSpec(name="dummy-clip", options={"bound": 2.5})
    assert [spec.name for spec in suite.formats] == ["dummy-fp", "dummy-q3.4"]
    assert suite.trials.trials == 5
    assert suite.seed == 7


def test_component_shorthands() -> None:
    assert ComponentSpec.model_validate("fitact") == ComponentSpec(name="fitact")
    assert ComponentSpec.model_validate({"name": "fitact", "preset": "v2"}).options == {"preset": "v2"}
    explicit = {"name": "fitact", "options": {"preset": "v2"}}
    assert ComponentSpec.model_validate(explicit).options == {"preset": "v2"}


def test_bers_sorted_and_scientific_notation_accepted() -> None:
    suite = parse_suite({"bers": ["1e-4", 1e-6, 0.00001]}, "flags")
    assert suite.bers == [1e-6, 1e-5, 1e-4]


def test_empty_file_is_refused_not_taken_for_the_defaults(write_suite: WriteSuite) -> None:
    with pytest.raises(UsageError, match="the suite file is empty"):
        load_suite(write_suite("# nothing but a comment\n"))
    assert load_suite(write_suite("name: defaults\n")) == Suite(name="defaults")


def test_adaptive_trials() -> None:
    policy = parse_suite({"trials": {"trials": 10, "max_trials": 200, "ci_halfwidth": 0.5}}, "flags").trials
    assert policy.adaptive
    assert (policy.trials, policy.max_trials, policy.ci_halfwidth) == (10, 200, 0.5)


def test_malformed_yaml_names_file_and_line(write_suite: WriteSuite) -> None:
    path = write_suite("version: 1\nmethods: [none\nseed: 3\n", name="broken.yaml")
    with pytest.raises(UsageError) as raised:
        load_suite(path)
    message = str(raised.value)
    assert message.startswith(f"{path}, line 3: malformed YAML: ")
    assert "\n" not in message


def test_tab_indentation_names_line(write_suite: WriteSuite) -> None:
    path = write_suite("version: 1\nmethods:\n\t- none\n")
    with pytest.raises(UsageError, match=rf"^{path}, line 3: malformed YAML"):
        load_suite(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(UsageError, match=rf"^{path}: cannot read suite file: No such file"):
        load_suite(path)


def test_binary_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UsageError, match=rf"^{path}: cannot read suite file: not UTF-8 text"):
        load_suite(path)


def test_suite_must_be_a_mapping(write_suite: WriteSuite) -> None:
    path = write_suite("- none\n- fitact\n")
    with pytest.raises(UsageError, match=rf"^{path}: a suite must be a mapping"):
        load_suite(path)


def test_unknown_key_named(write_suite: WriteSuite) -> None:
    path = write_suite("version: 1\ntrails: 5\n")
    with pytest.raises(UsageError) as raised:
        load_suite(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: trails: unknown option (allowed: ")
    assert "trials" in message


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("seed: -1", "seed", ">= 0 and <= 9223372036854775807"),
        ("eval_batch_size: 0", "eval_batch_size", ">= 1 and <= 1000000"),
        ("trials: 0", "trials.trials", "greater than or equal to 1"),
        ("trials: {trials: 5, max_trials: 9, ci_halfwidth: 500}", "trials.ci_halfwidth", "less than or equal to 100"),
        ("bers: [0.5, 1.5]", "bers", "each BER must lie in (0, 1], got 1.5"),
        ("bers: [1.0e-5, 1.0e-5]", "bers", "BERs must be distinct"),
        ("bers: []", "bers", "at least 1 item"),
        ("methods: []", "methods", "at least 1 item"),
        ("version: 2", "version", "Input should be 1"),
    ],
)
def test_out_of_range_names_key_and_range(write_suite: WriteSuite, text: str, key: str, allowed: str) -> None:
    path = write_suite(text + "\n")
    with pytest.raises(UsageError) as raised:
        load_suite(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {key}: ")
    assert allowed in message


def test_inconsistent_adaptive_trials_refused() -> None:
    with pytest.raises(UsageError, match="max_trials \\(5\\) must be at least trials \\(10\\)"):
        parse_suite({"trials": {"trials": 10, "max_trials": 5, "ci_halfwidth": 1.0}}, "flags")
    with pytest.raises(UsageError, match="adaptive trials need both max_trials and ci_halfwidth"):
        parse_suite({"trials": {"trials": 10, "max_trials": 50}}, "flags")


def test_every_problem_reported(write_suite: WriteSuite) -> None:
    path = write_suite("seed: -1\nbogus: 1\neval_batch_size: 0\n")
    with pytest.raises(UsageError) as raised:
        load_suite(path)
    assert len(str(raised.value).splitlines()) == 3


def test_seeds_and_sampling() -> None:
    suite = parse_suite({"seeds": [0, 1, 2], "trials": {"trials": 5, "sampling": "bernoulli"}}, "t")
    assert suite.all_seeds == [0, 1, 2] and suite.trials.sampling == "bernoulli"
    assert Suite().all_seeds == [0] and Suite().trials.sampling == "conditional"
    for bad in ({"seeds": [0, 0]}, {"seeds": [1], "seed": 2}, {"seeds": [-1]}, {"trials": {"sampling": "x"}}):
        with pytest.raises(UsageError):
            parse_suite(bad, "t")


@pytest.mark.parametrize(("text", "line", "key"), [
    ("version: 1\nseed: 0\nbers: [1.0e-5]\nseed: 1\n", 4, "'seed' is given twice (first on line 2)"),
    ("version: 1\ntrials: {trials: 4, trials: 8}\n", 2, "'trials' is given twice"),
    ("version: 1\nmethods:\n  - {name: ranger, granularity: layer, granularity: channel}\n", 3,
     "'granularity' is given twice"),
])
def test_a_key_given_twice_is_refused_not_overwritten(write_suite: WriteSuite, text: str, line: int,
                                                      key: str) -> None:
    with pytest.raises(UsageError, match=rf"line {line}: malformed YAML: {re.escape(key)}"):
        load_suite(write_suite(text))


@pytest.mark.parametrize(("text", "where"), [
    ("bers: [true]", "bers.0"),
    ("trials: true", "trials.trials"),
    ("trials: {trials: 3, max_trials: false, ci_halfwidth: 1.0}", "trials.max_trials"),
    ("seed: true", "seed"),
    ("seeds: [0, true]", "seeds.1"),
    ("eval_batch_size: true", "eval_batch_size"),
    ("guards: {max_clean_drop: true}", "guards.max_clean_drop"),
])
def test_true_or_false_is_not_taken_for_a_number(write_suite: WriteSuite, text: str, where: str) -> None:
    with pytest.raises(UsageError, match=rf": {where}: Input should be a valid (integer|number).*got '(true|false)'"):
        load_suite(write_suite(f"version: 1\n{text}\n"))


def test_a_plugin_option_that_is_a_number_refuses_a_boolean_and_a_boolean_option_takes_one() -> None:
    from resbench.options import Options, validate_options

    class Burst(Options):
        width: int = 2
        scale: float | None = None
        sizes: list[int] = []
        exact: bool = False

    for raw in ({"width": True}, {"scale": False}, {"sizes": [1, True]}):
        with pytest.raises(UsageError, match=r"got '(true|false)'"):
            validate_options(Burst, raw, "fault model burst")
    assert validate_options(Burst, {"exact": True, "width": 3}, "fault model burst") == Burst(exact=True, width=3)
