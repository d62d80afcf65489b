"""The hooks a resbench plugin can implement: one ``register_*`` hook per family.

Every hook receives a ``register`` callable and calls it once per item::

    register(name, item, options=OptionsModel, description="one line", pattern=None)

``options`` is a :class:`resbench.options.Options` subclass (unknown fields refused); when omitted the
item's ``Options`` attribute is used, else the item takes no options. ``description`` defaults to the
first line of the item's docstring. ``pattern``, a regular expression with named groups, lets one entry
answer a family of names whose groups become option values (``qM.N`` answers ``q3.4``). Names are
unique within a family: a second registration of the same name is an error. resbench records which
plugin registered each item.

Built-in plugins go through exactly these hooks. ``docs/plugins.md`` documents each one with an example.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

__all__ = ["PROJECT_NAME", "Register", "hookspec"]

PROJECT_NAME = "resbench"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class Register(Protocol):
    """The callable handed to every ``register_*`` hook."""

    def __call__(
        self,
        name: str,
        item: Any,
        *,
        options: type | None = None,
        description: str | None = None,
        pattern: str | None = None,
    ) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# Fault engine: how stored bits look and how they go wrong
# ---------------------------------------------------------------------------------------------------------


@hookspec
def register_formats(register: Register) -> None:
    """Register number formats.

    Called once when the plugin manager loads. ``item`` is a factory ``item(options) -> NumberFormat``
    (see :mod:`resbench.engine.formats`): the format says how many bits an element takes, encodes float tensors
    to integer codes and decodes codes back to the float32 values the network computes with.
    """


@hookspec
def register_fault_models(register: Register) -> None:
    """Register fault models.

    ``item`` is a factory ``item(options) -> FaultModel`` (see :mod:`resbench.engine.faults`): given a fault
    space, a sorted list of bit-error rates and a seed, the fault model samples the sites that go wrong.
    """


# ---------------------------------------------------------------------------------------------------------
# Resilience methods and their components
# ---------------------------------------------------------------------------------------------------------


@hookspec
def register_activation_schemes(register: Register) -> None:
    """Register activation schemes: what replaces an activation at one call site.

    ``item`` is a factory ``item(options) -> ActivationScheme`` that builds the bounded activation
    module for a call site from its profile (clamp to a bound, zero above it, smooth FitReLU, ...).
    """


@hookspec
def register_threshold_optimizers(register: Register) -> None:
    """Register threshold optimizers: how a method finds its bounds.

    ``item`` is a factory ``item(options) -> ThresholdOptimizer`` (profiling, fault-driven search,
    post-training, progressive distillation).
    """


@hookspec
def register_weight_transforms(register: Register) -> None:
    """Register weight transforms: how weights are stored and read back (SAF, scaling).

    ``item`` is a factory ``item(options) -> WeightTransform`` (see :mod:`resbench.methods.transforms`):
    for every conv/linear layer it gives a read-back module, registered as a parametrization, so the
    layer stores a tensor (what faults hit) and computes with the value read back from it.
    """


@hookspec
def register_methods(register: Register) -> None:
    """Register resilience methods: named recipes of an activation scheme, a threshold optimizer and a
    weight transform. ``none`` (the unprotected baseline) is registered this way too, and so is
    ``compose``, which answers every ``A+B`` name.

    ``item`` is a factory ``item(options) -> Method`` (see :mod:`resbench.methods`). A method turns a
    trained model into a protected one and says which of the tensors it adds are stored (and therefore
    part of the fault space).
    """


# ---------------------------------------------------------------------------------------------------------
# What is benchmarked
# ---------------------------------------------------------------------------------------------------------


@hookspec
def register_models(register: Register) -> None:
    """Register model architectures.

    ``item`` is a factory ``item(image_shape, num_classes, options) -> torch.nn.Module`` where
    ``image_shape`` is ``(channels, height, width)``. Tiny ``test-*`` models live in this family too.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    ``item`` is a factory ``item(options, data_root) -> DatasetSplits`` giving train, validation (carved
    from train) and test splits, the image shape and the number of classes (see :mod:`resbench.datasets`).
    """


# ---------------------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------------------


@hookspec
def register_executors(register: Register) -> None:
    """Register executors: where a run's jobs run (this process, a process pool, a cluster).

    ``item`` is a factory ``item(options) -> Executor``. ``executor.map(jobs)`` runs every job once,
    anywhere, and yields in the driver each output the jobs yield, as soon as it arrives (one job's
    outputs in order). A job is a picklable zero-argument callable; calling it yields picklable outputs
    (cell records, trial rows, phase timings, failures) and touches no store: only the driver writes.
    ``job.resources`` says what it needs (``num_cpus``, ``num_gpus``). A job whose worker is lost may be
    run again (rows are deterministic and the store keeps each once); if it cannot be run, the executor
    yields the outputs of ``job.lost(reason)``, which mark its cells failed. An optional ``close()`` is
    called when the run ends.
    """


@hookspec
def register_report_formats(register: Register) -> None:
    """Register leaderboard output formats.

    ``item`` is a function ``item(tables) -> str`` turning the leaderboard tables into text
    (markdown, csv, json, latex, html, ...).
    """


@hookspec
def register_commands(register: Register) -> None:
    """Register ``resbench`` subcommands.

    ``item`` is an object with ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
    ``run(args: argparse.Namespace) -> int``; ``description`` is the command's help line.
    """
