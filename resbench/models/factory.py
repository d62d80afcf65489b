"""Any PyTorch model, without writing a plugin: the ``module`` model builds ``nn.Module`` from a factory.

A factory is a callable named ``package.module:callable`` (imported from the environment) or
``path/to/file.py:callable`` (loaded from that file); a dotted attribute path after the colon reaches
nested objects (``nets:Net.small``). It is called with the suite's ``arguments`` as keyword arguments,
plus ``image_shape`` (C, H, W) and ``num_classes`` when its signature names them. With ``checkpoint``
the model is loaded from that state dict instead of being trained.

In a suite::

    models:
      - my_package.nets:build                          # shorthand: a factory, no arguments
      - {name: module, factory: "nets.py:build", arguments: {width: 64}, checkpoint: weights.pt}

Every problem is bad input (:class:`~resbench.errors.UsageError`, one line): a factory that cannot be
imported, is not callable, raises, or returns something that is not an ``nn.Module``. Whether the model
fits a dataset is checked with a probe forward pass (:func:`check_fits`) before any work.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from pydantic import Field
from torch import nn

from resbench.errors import UsageError
from resbench.models.common import ImageShape
from resbench.options import Options

__all__ = ["FACTORY_MODEL", "ModuleOptions", "check_fits", "file_digest", "import_factory", "is_factory_name",
           "model_checkpoint", "model_file_identity", "module"]

#: The registered name of the model built from a user's factory.
FACTORY_MODEL = "module"
_CONTEXT_ARGUMENTS = ("image_shape", "num_classes")


class ModuleOptions(Options):
    """Options of ``module``: the factory, its keyword arguments and optionally trained weights."""

    factory: str = Field(min_length=1, description="'package.module:callable' or 'path/to/file.py:callable'")
    arguments: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    checkpoint: Path | None = Field(
        default=None, description="state dict to load instead of training (its SHA-256 joins the cell identity)"
    )


def is_factory_name(name: str) -> bool:
    """Whether a model name given in a suite or on the command line is a factory (it holds a colon)."""
    return ":" in name


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (identity of a checkpoint), read once per version of the file."""
    stat = path.stat()
    return _digest(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _digest(path: Path, modified_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_checkpoint(name: str, options: dict[str, Any]) -> Path | None:
    """The checkpoint a suite's model entry names itself (a ``module`` model's ``checkpoint``), if any."""
    checkpoint = options.get("checkpoint") if name == FACTORY_MODEL else None
    return Path(checkpoint) if checkpoint is not None else None


def model_file_identity(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """What a model entry's files add to its identity: the SHA-256 of its checkpoint (empty for others).

    A missing checkpoint is bad input.
    """
    checkpoint = model_checkpoint(name, options)
    if checkpoint is None:
        return {}
    if not checkpoint.is_file():
        raise UsageError(f"model {name}: checkpoint {checkpoint} does not exist")
    return {"checkpoint_sha256": file_digest(checkpoint)}


def _load_file(path: Path, factory: str) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"model factory {factory!r}: file {path} does not exist")
    resolved = path.resolve()
    name = "resbench_factory_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"model factory {factory!r}: {path} is not a Python file")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[name]
        raise
    return loaded


def _import_module(location: str, factory: str) -> ModuleType:
    try:
        if location.endswith(".py") or "/" in location or "\\" in location:
            return _load_file(Path(location), factory)
        return importlib.import_module(location)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"model factory {factory!r} cannot be imported: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def import_factory(factory: str) -> Callable[..., Any]:
    """The callable that ``factory`` (``module:callable`` or ``file.py:callable``) names."""
    location, _, attribute = factory.rpartition(":")
    if not location or not attribute:
        raise UsageError(f"model factory {factory!r}: expected 'package.module:callable' or "
                         "'path/to/file.py:callable'")
    found: Any = _import_module(location, factory)
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise UsageError(f"model factory {factory!r}: {location} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise UsageError(f"model factory {factory!r}: {attribute} is a {type(found).__name__}, not callable")
    return found


def _context_arguments(factory: Callable[..., Any], image_shape: ImageShape, num_classes: int) -> dict[str, Any]:
    """``image_shape`` and ``num_classes`` for a factory whose signature names them."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return {}
    given = {"image_shape": tuple(image_shape), "num_classes": int(num_classes)}
    return {name: given[name] for name in _CONTEXT_ARGUMENTS if name in parameters}


def module(image_shape: ImageShape, num_classes: int, options: ModuleOptions) -> nn.Module:
    """A model built by a user's factory (``package.module:callable`` or ``file.py:callable``)."""
    factory = import_factory(options.factory)
    arguments = {**options.arguments, **_context_arguments(factory, image_shape, num_classes)}
    try:
        built = factory(**arguments)
    except Exception as error:
        raise UsageError(f"model factory {options.factory!r} failed: {_one_line(error)}") from None
    if not isinstance(built, nn.Module):
        raise UsageError(f"model factory {options.factory!r} returned a {type(built).__name__}, "
                         "not a torch.nn.Module")
    return built


def check_fits(model: nn.Module, images: torch.Tensor, num_classes: int, label: str, dataset: str) -> None:
    """A probe forward pass of ``images`` (a small batch of the dataset): the model must give one row of
    ``num_classes`` logits per image, or the problem is bad input naming model and dataset."""
    was_training = model.training
    model.eval()
    stored = next(itertools.chain(model.parameters(), model.buffers()), None)
    images = images.to(stored.device) if stored is not None else images
    try:
        with torch.no_grad():
            logits = model(images)
    except Exception as error:
        raise UsageError(f"model {label} does not fit dataset {dataset} (images {tuple(images.shape[1:])}): "
                         f"{_one_line(error)}") from None
    finally:
        model.train(was_training)
    expected = (images.shape[0], num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(f"model {label} does not fit dataset {dataset}: it gives {got} for {images.shape[0]} "
                         f"images, expected logits of shape {expected}")
