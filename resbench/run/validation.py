"""Suite validation: the one place that checks a suite before any work, for ``validate`` and ``run``.

:func:`check_suite` finds every problem of a parsed suite that can be found without running it (names
that no plugin registers, options an item rejects, ``fault_space`` and ``training`` settings, each fault
model against each number format) and raises one :class:`UsageError` listing them, one line each;
:func:`check_operator_choice` checks, once a dataset is loaded, that activation fault models choose
operators in every model built for it.
:func:`resolve_fault_models` and :func:`resolve_formats` are where a suite's fault and format specs become
objects (a run keeps them in its :class:`~resbench.run.cells.CellKeys`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch

from resbench.config import ComponentSpec, Suite
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.activation_faults import ActivationFaultOptions
from resbench.engine.activation_injection import chosen_operators
from resbench.engine.faults import FaultModel
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.engine.formats import Int8, NumberFormat
from resbench.engine.torch_ao import check_backend
from resbench.errors import UsageError
from resbench.models import build_model
from resbench.models.factory import FACTORY_MODEL, import_factory, model_file_identity
from resbench.options import validate_options
from resbench.plugins import get_registries
from resbench.training import TrainingOptions

__all__ = ["SuiteSize", "check_operator_choice", "check_operator_choices", "check_suite", "quantized_problems",
           "resolve_fault_models", "resolve_formats"]

#: Suite fields naming plugin items, and the registry (family) of each.
_FAMILY_OF_FIELD = {"methods": "methods", "models": "models", "datasets": "datasets", "formats": "formats",
                    "faults": "faults"}


def resolve_fault_models(suite: Suite, source: str = "suite") -> dict[str, FaultModel]:
    """The suite's fault models, by spec label (built with their options)."""
    registries = get_registries()
    return {spec.label: registries.faults.build(spec.name, spec.options, where=f"{source}: {spec.label}").value
            for spec in suite.faults}


def resolve_formats(suite: Suite, source: str = "suite") -> dict[str, NumberFormat]:
    """The suite's number formats, by spec label (built with their options)."""
    registries = get_registries()
    return {spec.label: registries.formats.build(spec.name, spec.options, where=f"{source}: {spec.label}").value
            for spec in suite.formats}


def check_suite(suite: Suite, source: str, device: str | torch.device | None = None) -> None:
    """Every problem of ``suite`` found before any work, in one :class:`UsageError` (one line each);
    ``device``, when known, is where the run computes."""
    problems = [*_name_problems(suite, source), *_settings_problems(suite, source)]
    if not problems:
        problems = _factory_problems(suite, source)
    if not problems:
        problems = [*_fault_problems(suite, source), *quantized_problems(suite, source, device)]
    if problems:
        raise UsageError("\n".join(problems))


def _name_problems(suite: Suite, source: str) -> list[str]:
    """Names that no plugin registers and options an item rejects."""
    registries = get_registries()
    specs: list[tuple[str, ComponentSpec]] = [
        (f"{field}[{index}]", spec) for field in _FAMILY_OF_FIELD for index, spec in enumerate(getattr(suite, field))
    ]
    specs.append(("executor", suite.executor))
    problems = []
    for where, spec in specs:
        family = where.split("[")[0]
        registry = getattr(registries, "executors" if family == "executor" else _FAMILY_OF_FIELD[family])
        try:
            registry.options_for(spec.name, spec.options, where=f"{source}: {where} ({spec.name})")
        except UsageError as error:
            message = str(error)
            problems.append(message if message.startswith(source) else f"{source}: {where}: {message}")
    return problems


def _factory_problems(suite: Suite, source: str) -> list[str]:
    """Models built by a user's factory: the factory imports to a callable and a checkpoint it names exists
    (what the factory returns, and whether it fits a dataset, is checked by the run's probe pass)."""
    problems = []
    for index, spec in enumerate(suite.models):
        if spec.name != FACTORY_MODEL:
            continue
        try:
            import_factory(str(spec.options["factory"]))
            model_file_identity(spec.name, spec.options)
        except UsageError as error:
            problems.append(f"{source}: models[{index}]: {error}")
    return problems


def _settings_problems(suite: Suite, source: str) -> list[str]:
    """Problems with ``fault_space`` and ``training``, found before any work rather than mid-run."""
    # Every training option has a default (a model family's recipe only changes defaults), so the
    # overrides are valid alone exactly when they are valid for every model.
    settings: list[tuple[str, type[Any], dict[str, Any]]] = [
        ("fault_space", FaultSpaceOptions, suite.fault_space),
        ("training", TrainingOptions, suite.training),
    ]
    problems = []
    for key, model, options in settings:
        try:
            validate_options(model, options, f"{source}: {key}")
        except UsageError as error:
            problems.append(str(error))
    return problems


def _fault_problems(suite: Suite, source: str) -> list[str]:
    """Each fault model against each number format (targets, bit fields, positions, operators)."""
    problems, seen = [], set()
    fault_models = resolve_fault_models(suite, source)
    number_formats = resolve_formats(suite, source)
    for format_spec in suite.formats:
        number_format = number_formats[format_spec.label]
        for fault_spec in suite.faults:
            try:
                fault_models[fault_spec.label].check(number_format)
            except UsageError as error:
                if (fault_spec.label, str(error)) not in seen:  # a problem of every format is said once
                    seen.add((fault_spec.label, str(error)))
                    problems.append(f"{source}: fault model {fault_spec.label} with format {format_spec.label}: "
                                    f"{error}")
    return problems


def quantized_problems(suite: Suite, source: str, device: str | torch.device | None = None) -> list[str]:
    """What a model on PyTorch's quantized kernels (``int8`` with ``engine: torch-ao``) cannot run: a method
    whose protection those kernels cannot carry, activation faults, fault space options (the fault space is
    the quantized weights' codes), a backend this PyTorch lacks, a device other than the CPU."""
    number_formats = resolve_formats(suite, source)
    real = [spec for spec in suite.formats if number_formats[spec.label].engine == "torch-ao"]
    if not real:
        return []
    problems = []
    for spec in real:
        number_format = cast(Int8, number_formats[spec.label])
        try:
            check_backend(number_format.backend)
        except UsageError as error:
            problems.append(f"{source}: format {spec.label}: {error}")
    where = f"{source}: format {real[0].label} (quantized kernels)"
    methods = get_registries().methods
    for method_spec in suite.methods:
        refusal = methods.build(method_spec.name, method_spec.options, where=source).value.quantized_refusal()
        if refusal is not None:
            problems.append(f"{where} cannot carry method {method_spec.label}: {refusal}")
    for label, fault_model in resolve_fault_models(suite, source).items():
        if fault_model.target != "activations":
            continue
        problems.append(f"{where}: fault model {label} targets activations; quantized kernels take weight faults only")
    if suite.fault_space:
        problems.append(f"{where}: fault_space options do not apply; its fault space is every quantized weight")
    if device is not None and torch.device(device).type != "cpu":
        problems.append(f"{where}: PyTorch's quantized kernels run on the CPU, not on {device}")
    return problems


def check_operator_choice(suite: Suite, splits: DatasetSplits, source: str) -> None:
    """Each activation fault model must choose at least one operator in each model built for ``splits``
    (untrained: which operators exist does not depend on the weights)."""
    for label, fault_model in resolve_fault_models(suite, source).items():
        if fault_model.target != "activations":
            continue
        options = cast(ActivationFaultOptions, fault_model.options)
        for model_spec in suite.models:
            with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the generator as it was
                model = build_model(model_spec.name, splits.image_shape, splits.num_classes, model_spec.options)
            try:
                chosen_operators(model, options)
            except UsageError as error:
                raise UsageError(f"{source}: fault model {label}, model {model_spec.label}: {error}") from None


def check_operator_choices(suite: Suite, source: str, data_root: Path | None = None) -> None:
    """:func:`check_operator_choice` on every dataset of the suite (each loaded, when the suite has
    activation fault models)."""
    if all(model.target != "activations" for model in resolve_fault_models(suite, source).values()):
        return
    for dataset_spec in suite.datasets:
        check_operator_choice(suite, load_dataset(dataset_spec.name, dataset_spec.options, data_root), source)


class SuiteSize:
    """How many cells a suite makes: groups (method x model x dataset x format) times, per group, a faulty
    cell per fault model and BER (one for one fault per inference) and a clean cell per fault model."""

    def __init__(self, suite: Suite) -> None:
        self.groups = math.prod(len(items) for items in (suite.methods, suite.models, suite.datasets, suite.formats))
        self.faulty = sum(len(model.cell_bers(suite.bers)) for model in resolve_fault_models(suite).values())
        self.clean = len(suite.faults)

    @property
    def cells(self) -> int:
        """Every cell of one seed."""
        return self.groups * (self.faulty + self.clean)

