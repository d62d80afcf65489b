"""Helpers for a plugin's own tests: a tiny data set, a ``PrepareContext`` on it, a tiny trained model, and
the preparation resbench runs, guards included, without a suite, a store or a cache.

::

    from resbench.methods.testing import prepare_method, tiny_model, tiny_prepare_context

    def test_my_recipe_bounds_every_call_site():
        context = tiny_prepare_context()
        prepared = prepare_method("my-recipe", tiny_model(context), context)
        ...

Everything is seeded: the same call gives the same images, weights and prepared model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from resbench.engine.formats import resolve_format
from resbench.methods.base import PrepareContext, defines_fit
from resbench.methods.guards import check_finite

__all__ = ["prepare_method", "tiny_model", "tiny_prepare_context"]


def _images(count: int, image_shape: tuple[int, int, int], num_classes: int, seed: int) -> TensorDataset:
    """Seeded random images whose brightness grows with the class, so a tiny model learns them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % num_classes
    images = torch.rand(count, *image_shape, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return TensorDataset(images, labels)


def tiny_prepare_context(*, image_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 3,
                         samples: int = 96, seed: int = 0, number_format: str = "fp32",
                         device: str = "cpu") -> PrepareContext:
    """A :class:`PrepareContext` over ``samples`` training and ``samples // 2`` validation images of
    ``image_shape`` in ``num_classes`` classes, deploying in ``number_format`` (a registered name)."""
    return PrepareContext(
        train=_images(samples, image_shape, num_classes, seed),
        validation=_images(max(num_classes, samples // 2), image_shape, num_classes, seed + 1),
        image_shape=image_shape, num_classes=num_classes, device=torch.device(device), seed=seed,
        number_format=resolve_format(number_format), batch_size=32)


def tiny_model(context: PrepareContext, *, epochs: int = 40, seed: int = 0) -> nn.Module:
    """A small CNN (conv, ReLU, max pool, flatten, linear, ReLU, linear) for ``context``'s images, trained
    ``epochs`` epochs on ``context.train`` (Adam); in eval mode, on ``context.device``."""
    torch.manual_seed(seed)
    channels, height, width = context.image_shape
    features = 4 * (height // 2) * (width // 2)
    model = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, context.num_classes))
    model.to(context.device)
    images, labels = (tensor.to(context.device) for tensor in context.train[:])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval()


def prepare_method(name: str, model: nn.Module, context: PrepareContext,
                   options: dict[str, Any] | None = None) -> nn.Module:
    """Prepare ``model`` with the registered method ``name`` as ``resbench run`` does: ``build``, the
    finiteness guard, ``fit`` where the method defines it, the guard again. Returns the prepared model
    (in eval mode); a plugin's exception or a guard's finding raises :class:`resbench.errors.PluginError`
    naming the plugin, the item and the phase, as in a run's failed cells."""
    from resbench.errors import blame_plugin
    from resbench.plugins import get_registries

    built = get_registries().methods.build(name, options or {}, where=f"method {name}")
    plugin, item = built.entry.plugin, f"method {built.entry.name!r}"
    with blame_plugin(plugin, item, "build"):
        prepared = built.value.build(model, context).to(context.device).eval()
    check_finite(prepared, plugin, item, "build", allow_unset=True)
    if defines_fit(built.value):
        with blame_plugin(plugin, item, "fit"):
            built.value.fit(prepared, context)
        check_finite(prepared, plugin, item, "fit")
    return prepared.eval()
