"""The suite: what a campaign crosses, read from YAML or from command-line flags and validated."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml

from resbench.datasets.files import FILE_DATASET, FILE_SUFFIXES
from resbench.engine.bers import sorted_bers
from resbench.errors import UsageError
from resbench.models.factory import FACTORY_MODEL, is_factory_name
from resbench.options import format_validation_error, numbers_not_booleans

__all__ = [
    "SUITE_VERSION",
    "ComponentSpec",
    "Guards",
    "Suite",
    "TrialPolicy",
    "load_suite",
    "parse_suite",
]

SUITE_VERSION: Literal[1] = 1
#: Values a suite file may hold once its YAML aliases are expanded; real suites hold a few hundred.
MAX_SUITE_VALUES = 100_000
SeedValue = Annotated[int, pydantic.Field(ge=0, le=2**63 - 1)]


class ComponentSpec(pydantic.BaseModel):
    """One named plugin item with its options: ``fitact`` or ``{name: fitact, preset: v2}`` in YAML."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = pydantic.Field(min_length=1)
    options: dict[str, Any] = pydantic.Field(default_factory=dict)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" in value and "options" not in value:
            options = {key: item for key, item in value.items() if key != "name"}
            return {"name": value["name"], "options": options}
        return value

    @property
    def label(self) -> str:
        """``name`` alone, or ``name[key=value,...]`` when options are set."""
        if not self.options:
            return self.name
        settings = ",".join(f"{key}={value}" for key, value in sorted(self.options.items()))
        return f"{self.name}[{settings}]"


class TrialPolicy(pydantic.BaseModel):
    """How many trials a cell gets: a fixed number, or adaptive until the 95% CI is narrow enough."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _numbers_not_booleans(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)

    trials: int = pydantic.Field(
        default=20, ge=1, le=100_000, description="trials per cell (minimum when adaptive)"
    )
    max_trials: int | None = pydantic.Field(
        default=None, ge=1, le=100_000, description="adaptive: stop a cell at this many trials"
    )
    ci_halfwidth: float | None = pydantic.Field(
        default=None,
        gt=0,
        le=100,
        description="adaptive: stop when the 95% CI half-width of mean accuracy (points) is below this",
    )
    sampling: Literal["conditional", "critical-bits", "bernoulli"] = pydantic.Field(
        default="conditional",
        description="per-bit Bernoulli faults: sample trials given at least one flip and weight exactly "
        "(conditional), stratify them by flips in each format's critical bits and weight exactly "
        "(critical-bits), or plain nested Bernoulli draws (bernoulli)",
    )
    critical_bits: dict[str, list[int]] = pydantic.Field(
        default_factory=dict,
        description="critical-bits sampling: the critical bit positions (LSB = 0) of a format, by its label, "
        "instead of those the format declares (resbench list formats)",
    )

    @pydantic.model_validator(mode="after")
    def _check_adaptive(self) -> TrialPolicy:
        if self.max_trials is not None and self.max_trials < self.trials:
            raise ValueError(f"max_trials ({self.max_trials}) must be at least trials ({self.trials})")
        if (self.ci_halfwidth is None) != (self.max_trials is None):
            raise ValueError("adaptive trials need both max_trials and ci_halfwidth")
        return self

    @property
    def adaptive(self) -> bool:
        """Whether cells stop early once the confidence interval is narrow enough."""
        return self.ci_halfwidth is not None


class Guards(pydantic.BaseModel):
    """Sanity guards on prepared methods (:mod:`resbench.methods.guards`): a method whose clean accuracy
    falls further below the unprotected model's fails its cells instead of becoming a row."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _numbers_not_booleans(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)

    max_clean_drop: float = pydantic.Field(
        default=5.0, ge=0, le=100,
        description="points of clean accuracy a method may lose against the unprotected model in the same format",
    )
    accept_clean_drop: list[str] = pydantic.Field(
        default_factory=list, description="methods (as written in the suite) whose larger clean drop is accepted",
    )


def _components(*names: str) -> Any:
    return pydantic.Field(default_factory=lambda: [ComponentSpec(name=name) for name in names], min_length=1)


class Suite(pydantic.BaseModel):
    """A benchmark suite: every combination of its lists is one cell of the campaign."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _numbers_not_booleans(cls, data: Any) -> Any:
        return numbers_not_booleans(cls, data)

    version: Literal[1] = SUITE_VERSION
    name: str = "custom"
    methods: list[ComponentSpec] = _components("none")
    models: list[ComponentSpec] = _components("lenet5")
    datasets: list[ComponentSpec] = _components("mnist5k")
    formats: list[ComponentSpec] = _components("fp32")
    faults: list[ComponentSpec] = _components("bitflip")
    bers: list[float] = pydantic.Field(default_factory=lambda: [1e-6, 1e-5, 1e-4], min_length=1)
    trials: TrialPolicy = pydantic.Field(default_factory=TrialPolicy)
    seed: int = pydantic.Field(default=0, ge=0, le=2**63 - 1)
    seeds: list[SeedValue] = pydantic.Field(
        default_factory=list,
        description="several base seeds: each trains its own baseline and prepares its own methods "
        "(replaces seed)",
    )
    fault_space: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="fault-space options (batch norm, layer selection, method tensors)"
    )
    training: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="overrides of the baseline training recipe (epochs, lr, ...)"
    )
    eval_batch_size: int = pydantic.Field(default=1024, ge=1, le=1_000_000)
    guards: Guards = pydantic.Field(default_factory=Guards, description="sanity guards on prepared methods")
    executor: ComponentSpec = pydantic.Field(default_factory=lambda: ComponentSpec(name="local"))

    @pydantic.field_validator("bers")
    @classmethod
    def _check_bers(cls, bers: list[float]) -> list[float]:
        try:
            return sorted_bers(bers)
        except UsageError as error:
            raise ValueError(str(error)) from None

    @pydantic.field_validator("methods", "models", "datasets", "formats", "faults")
    @classmethod
    def _check_distinct(cls, specs: list[ComponentSpec]) -> list[ComponentSpec]:
        seen: set[str] = set()
        for spec in specs:
            key = spec.model_dump_json()
            if key in seen:
                raise ValueError(f"{spec.label} is listed twice (its cells would be computed twice)")
            seen.add(key)
        return specs

    @pydantic.model_validator(mode="after")
    def _check_seeds(self) -> Suite:
        if self.seeds and "seed" in self.model_fields_set:
            raise ValueError("give either seed or seeds, not both")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self

    @pydantic.field_validator("models", mode="before")
    @classmethod
    def _factory_shorthand(cls, value: Any) -> Any:
        return [_factory_spec(item) for item in value] if isinstance(value, list) else value

    @pydantic.field_validator("datasets", mode="before")
    @classmethod
    def _file_shorthand(cls, value: Any) -> Any:
        return [_file_spec(item) for item in value] if isinstance(value, list) else value

    @property
    def all_seeds(self) -> list[int]:
        """The base seeds the suite runs: ``seeds``, or ``[seed]``."""
        return list(self.seeds) or [self.seed]

    @pydantic.field_validator("trials", mode="before")
    @classmethod
    def _trials_shorthand(cls, value: Any) -> Any:
        return {"trials": value} if isinstance(value, int | str | float) else value  # trials: 30


def _factory_spec(item: Any) -> Any:
    """A model named by a factory (``pkg.nets:build``, or ``{name: pkg.nets:build, arguments: ...}``) is the
    ``module`` model with that factory."""
    if isinstance(item, str) and is_factory_name(item):
        return {"name": FACTORY_MODEL, "options": {"factory": item}}
    if isinstance(item, dict) and is_factory_name(str(item.get("name", ""))) and "options" not in item:
        options = {key: value for key, value in item.items() if key != "name"}
        return {"name": FACTORY_MODEL, "options": {"factory": item["name"], **options}}
    return item


def _file_spec(item: Any) -> Any:
    """A dataset named by a file (``data/digits.npz``, or ``{name: data/digits.npz, test_fraction: 0.3}``) is the
    ``files`` dataset reading it."""
    if isinstance(item, str) and item.endswith(FILE_SUFFIXES):
        return {"name": FILE_DATASET, "options": {"path": item}}
    if isinstance(item, dict) and str(item.get("name", "")).endswith(FILE_SUFFIXES) and "options" not in item:
        options = {key: value for key, value in item.items() if key != "name"}
        return {"name": FILE_DATASET, "options": {"path": item["name"], **options}}
    return item


def parse_suite(data: Any, source: str) -> Suite:
    """Validate a mapping (from YAML or flags) into a :class:`Suite`; problems name key and range."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a suite must be a mapping of keys to values")
    try:
        return Suite.model_validate(data)
    except pydantic.ValidationError as error:
        raise UsageError(format_validation_error(error, source, Suite)) from None


class _SuiteLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {seen[key].start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file; malformed YAML names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot read suite file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: cannot read suite file: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_SuiteLoader)  # a SafeLoader that refuses repeated keys
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise UsageError(f"{where}: malformed YAML: {problem}") from None
    if data is None:  # an empty or comment-only file: most likely the wrong file, never "the defaults"
        raise UsageError(f"{path}: the suite file is empty (no settings, only comments or blank lines)")
    _check_expanded_size(data, path)
    return parse_suite(data, str(path))


def _check_expanded_size(data: Any, path: Path) -> None:
    """Refuse a file whose aliases expand to more than :data:`MAX_SUITE_VALUES` values.

    YAML loads an alias as a shared reference, but validation copies every reference: nested aliases (the
    "billion laughs" file) would grow to gigabytes. Counting stops at the bound, so it costs little.
    """
    pending, count = [data], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > MAX_SUITE_VALUES:
            raise UsageError(f"{path}: the suite expands to more than {MAX_SUITE_VALUES:,} values (through YAML "
                             "aliases); refused")
        if isinstance(value, dict):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            pending += value
