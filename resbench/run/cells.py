"""Cell identity, trial seeds and what a rerun still needs: the one place that decides them.

A *group* is (method, model, dataset, format): the cells that share one prepared and deployed model.
Each group has, per fault model, one clean cell (BER 0) and one cell per BER of the sweep. A cell's id
is a hash of everything that determines its results, so any executor, any machine and any rerun agree
on it; trial seeds never depend on the method (common random numbers across methods).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from resbench.config import ComponentSpec, Suite
from resbench.datasets import TEST_SUBSET
from resbench.datasets.files import dataset_file_identity
from resbench.engine.estimator import CellDesign, effective_sampling
from resbench.engine.faults import FaultModel
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.engine.formats import NumberFormat
from resbench.models.factory import model_file_identity
from resbench.plugins import get_registries, provider_versions
from resbench.run.campaign import trials_needed
from resbench.run.validation import resolve_fault_models, resolve_formats
from resbench.seeds import derive_seed

__all__ = ["CellKeys", "Group", "StoredTrials", "method_identity", "plugin_versions", "unversioned"]

#: Stored accuracy per trial index, per cell id (what the store holds of a group's cells).
StoredTrials = dict[str, dict[int, float]]


def method_identity(spec: ComponentSpec) -> dict[str, Any]:
    """The method's registered name, every option (defaults included: ``fitact`` and ``{name: fitact,
    <its defaults>}`` are one cell) and ``plugins``: the version of every plugin providing one of its parts
    (the method, a recipe's activation scheme and optimizer, a composition's parts). Rows computed by
    another version of any of them belong to another cell (as do those of another version of the plugin
    providing the cell's model, dataset, format or fault model: :meth:`CellKeys.definition`)."""
    return _method_identity(spec.model_dump_json(), id(get_registries()))


@functools.lru_cache(maxsize=256)
def _method_identity(spec_json: str, registries: int) -> dict[str, Any]:
    spec = ComponentSpec.model_validate_json(spec_json)
    built = get_registries().methods.build(spec.name, spec.options, where=f"method {spec.label}")
    versions = {built.entry.plugin: get_registries().plugins[built.entry.plugin].version}
    _collect_versions(built.value.cache_identity(), versions)
    return {**built.identity, "plugins": dict(sorted(versions.items()))}


def _collect_versions(identity: Any, versions: dict[str, str]) -> None:
    """Every ``{"plugin": name, "version": v}`` in a method's :meth:`~resbench.methods.base.Method.cache_identity`."""
    if not isinstance(identity, dict):
        return
    if isinstance(identity.get("plugin"), str) and "version" in identity:
        versions[identity["plugin"]] = str(identity["version"])
    for value in identity.values():
        _collect_versions(value, versions)


def plugin_versions(definition: str) -> dict[str, str]:
    """The plugin versions recorded in a cell definition: its method's parts' and those providing its model,
    dataset, format and fault model (empty for cells stored before they were recorded)."""
    fields = json.loads(definition)
    method = fields.get("method", {})
    return {**(method.get("plugins", {}) if isinstance(method, dict) else {}), **fields.get("plugins", {})}


def unversioned(definition: str) -> str:
    """A cell definition without its plugin versions: equal for one cell computed by other versions."""
    fields = json.loads(definition)
    fields.pop("plugins", None)
    if isinstance(fields.get("method"), dict):
        fields["method"] = {key: value for key, value in fields["method"].items() if key != "plugins"}
    return json.dumps(fields, sort_keys=True)


@dataclass(frozen=True)
class Group:
    """(method, model, dataset, format): the cells that share one prepared and deployed model."""

    method_spec: ComponentSpec
    model_spec: ComponentSpec
    dataset_spec: ComponentSpec
    format_spec: ComponentSpec


@dataclass(frozen=True)
class CellKeys:
    """Everything beyond a group that determines a run's results, and the identities derived from it."""

    suite: Suite
    space_options: FaultSpaceOptions
    checkpoint_digest: str | None

    @functools.cached_property
    def fault_models(self) -> dict[str, FaultModel]:
        """The suite's fault models by spec label: each fault spec is resolved here, once per run."""
        return resolve_fault_models(self.suite)

    def fault_model(self, fault_spec: ComponentSpec) -> FaultModel:
        """The fault model of ``fault_spec``."""
        return self.fault_models[fault_spec.label]

    @functools.cached_property
    def number_formats(self) -> dict[str, NumberFormat]:
        """The suite's number formats by spec label, resolved here once per run."""
        return resolve_formats(self.suite)

    def number_format(self, format_spec: ComponentSpec) -> NumberFormat:
        """The number format of ``format_spec``."""
        return self.number_formats[format_spec.label]

    def model_identity(self, model_spec: ComponentSpec) -> dict[str, Any]:
        """A model entry as cells and caches hash it: the spec, and the SHA-256 of a checkpoint it names."""
        return {**model_spec.model_dump(), **model_file_identity(model_spec.name, model_spec.options)}

    def definition(self, group: Group, fault_spec: ComponentSpec, ber: float) -> str:
        """Everything that determines a cell's results, as canonical JSON; its hash is the cell id."""
        return json.dumps(
            {
                "method": method_identity(group.method_spec),
                "model": self.model_identity(group.model_spec),
                "dataset": {**group.dataset_spec.model_dump(),
                            **dataset_file_identity(group.dataset_spec.name, group.dataset_spec.options)},
                "format": group.format_spec.model_dump(),
                "fault_model": fault_spec.model_dump(),
                "fault_space": self.space_options.model_dump(),
                "ber": ber,
                # Sites at every BER of a trial are thinned from a sample at the sweep's largest BER.
                "sweep_max_ber": max(self.suite.bers),
                "seed": self.suite.seed,
                "training": self.suite.training,
                "checkpoint": self.checkpoint_digest,
                "sampling": effective_sampling(self.suite.trials.sampling, self.fault_model(fault_spec)),
                "test_subset": TEST_SUBSET if "test_limit" in group.dataset_spec.options else None,
                # Rows computed by another version of the plugin providing any of these are another cell.
                "plugins": provider_versions(("models", group.model_spec.name), ("datasets", group.dataset_spec.name),
                                             ("formats", group.format_spec.name), ("faults", fault_spec.name)),
                **self.fault_model(fault_spec).definition_fields(),
            },
            sort_keys=True,
            default=str,
        )

    def cell_id(self, group: Group, fault_spec: ComponentSpec, ber: float) -> str:
        """The id of cell (group, fault model, BER)."""
        return str(derive_seed(self.definition(group, fault_spec, ber)))

    def trial_seed(self, group: Group, fault_spec: ComponentSpec, trial: int) -> int:
        """Trial seeds from (base seed, model, dataset, format, fault model, trial): never the method."""
        return derive_seed(self.suite.seed, group.model_spec.label, group.dataset_spec.label,
                           group.format_spec.label, fault_spec.label, trial)

    def bers(self, fault_spec: ComponentSpec) -> list[float]:
        """The BERs of a fault model's faulty cells: the sweep, or one per-inference cell (act-single)."""
        return self.fault_model(fault_spec).cell_bers(self.suite.bers)

    def clean_cell_ids(self, group: Group) -> list[str]:
        """The BER-0 cell of each fault model."""
        return [self.cell_id(group, fault, 0.0) for fault in self.suite.faults]

    def faulty_cell_ids(self, group: Group) -> list[str]:
        """The cells of each fault model and BER of the sweep (or its one per-inference cell)."""
        return [self.cell_id(group, fault, ber) for fault in self.suite.faults for ber in self.bers(fault)]

    def all_definitions(self, group: Group) -> dict[str, str]:
        """Every cell of ``group`` (clean and faulty), definition by cell id."""
        return {self.cell_id(group, fault, ber): self.definition(group, fault, ber)
                for fault in self.suite.faults for ber in [0.0, *self.bers(fault)]}

    def all_cell_ids(self, group: Group) -> list[str]:
        """Every cell of ``group``: clean ones and faulty ones."""
        return [*self.clean_cell_ids(group), *self.faulty_cell_ids(group)]

    def complete(self, group: Group, stored: StoredTrials, zero_flip: dict[str, float]) -> bool:
        """Whether ``stored`` holds every trial of ``group`` (a rerun then skips it whole).

        ``zero_flip`` is the stored P(K = 0) of conditional cells: each cell is judged with its own design.
        """
        if any(not stored.get(cell_id) for cell_id in self.clean_cell_ids(group)):
            return False
        for fault_spec in self.suite.faults:
            clean = stored[self.cell_id(group, fault_spec, 0.0)][0]
            for ber in self.bers(fault_spec):
                cell_id = self.cell_id(group, fault_spec, ber)
                design = CellDesign(zero_flip.get(cell_id, 0.0), clean)
                if trials_needed(list(stored.get(cell_id, {}).values()), self.suite.trials, design):
                    return False
        return True

    def planned_trials(self, group: Group, stored: StoredTrials) -> int:
        """Trials still due in ``group`` by the policy's minimum count (adaptive ones may add more)."""
        return sum(max(0, self.suite.trials.trials - len(stored.get(cell_id, {})))
                   for cell_id in self.faulty_cell_ids(group))
