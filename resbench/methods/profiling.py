"""Activation profiling: what each activation call site outputs on real data, for methods to set bounds.

Per call site, over a data set (forward hooks, eval mode, ``torch.inference_mode``, batched):

* the per-image maximum (the maximum over all of one image's outputs at that site), so the distribution
  of per-image maxima: Ranger takes the maximum or a quantile of it (Chen et al. 2021);
* the overall maximum;
* the per-neuron maximum over images, shaped like one image's output (C, H, W) or (features,):
  FitAct's neuron-wise bounds start there (Ghavami et al.);
* the per-channel maximum (C,);
* chosen quantiles of the per-image maxima and of all output values. Value quantiles come from a
  uniform random sample of at most ``value_samples`` outputs per site (bottom-k by random key, seeded):
  exact while a site's outputs number fewer than that, an estimate beyond.

A model that is not rewritten yet is profiled through a rewritten copy, so the site names always match
what :func:`resbench.models.callsites.rewrite_activation_call_sites` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from resbench.datasets.base import random_subset
from resbench.datasets.loading import Batches, iterate_batches
from resbench.models.callsites import activation_call_sites, is_rewritten, rewrite_activation_call_sites

__all__ = ["DEFAULT_QUANTILES", "ActivationProfile", "profile_activations"]

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)


@dataclass
class ActivationProfile:
    """What one call site output over the profiled images (tensors on the CPU, float32)."""

    name: str
    images: int
    per_image_max: torch.Tensor
    max: float
    neuron_max: torch.Tensor
    channel_max: torch.Tensor
    image_max_quantiles: dict[float, float] = field(default_factory=dict)
    value_quantiles: dict[float, float] = field(default_factory=dict)
    value_sample: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def image_max_quantile(self, q: float) -> float:
        """Quantile ``q`` of the per-image maxima (linear interpolation)."""
        return float(torch.quantile(self.per_image_max.double(), q))

    def value_quantile(self, q: float) -> float:
        """Quantile ``q`` of the sampled output values (linear interpolation)."""
        return float(torch.quantile(self.value_sample.double(), q))


class _SiteRecorder:
    """Accumulates one call site's statistics batch by batch (on the device, one transfer at the end)."""

    def __init__(self, name: str, value_samples: int, seed: int):
        self.name = name
        self.value_samples = value_samples
        self.seed = seed
        self.per_image_max: list[torch.Tensor] = []
        self.neuron_max: torch.Tensor | None = None
        self.sample_values: torch.Tensor | None = None
        self.sample_keys: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        values = output.detach().float()
        flat = values.reshape(values.shape[0], -1)
        self.per_image_max.append(flat.amax(dim=1))
        batch_max = values.amax(dim=0)
        self.neuron_max = batch_max if self.neuron_max is None else torch.maximum(self.neuron_max, batch_max)
        if self.value_samples:
            self._sample(flat.reshape(-1))

    def _sample(self, values: torch.Tensor) -> None:
        """Bottom-k sampling: every value gets a uniform random key; keep the k smallest keys."""
        if self.generator is None:
            self.generator = torch.Generator(device=values.device).manual_seed(self.seed)
        keys = torch.rand(values.shape, generator=self.generator, device=values.device)
        if self.sample_values is not None and self.sample_keys is not None:
            values = torch.cat([self.sample_values, values])
            keys = torch.cat([self.sample_keys, keys])
        if len(values) > self.value_samples:
            keys, index = torch.topk(keys, self.value_samples, largest=False, sorted=False)
            values = values[index]
        elif self.sample_values is None:
            values = values.clone()  # the hook's output may be modified in place later in the forward
        self.sample_values, self.sample_keys = values, keys

    def profile(self, quantiles: Sequence[float]) -> ActivationProfile:
        if self.neuron_max is None:
            raise ValueError(f"call site {self.name!r} saw no data")
        per_image = torch.cat(self.per_image_max).cpu()
        neuron_max = self.neuron_max.cpu()
        channel_max = neuron_max.reshape(neuron_max.shape[0], -1).amax(dim=1) if neuron_max.dim() else neuron_max
        sample = self.sample_values.cpu() if self.sample_values is not None else torch.empty(0)
        result = ActivationProfile(self.name, len(per_image), per_image, float(per_image.max()), neuron_max,
                                   channel_max, value_sample=sample)
        result.image_max_quantiles = {q: result.image_max_quantile(q) for q in quantiles}
        if len(sample):
            result.value_quantiles = {q: result.value_quantile(q) for q in quantiles}
        return result


def _limited(data: Dataset[Any] | Batches, batch_size: int, samples: int | None, seed: int) -> Batches:
    """A seeded random sample of ``samples`` images of a Dataset (splits may be ordered by class), or the
    first ``samples`` images of an iterable of batches (which cannot be sampled)."""
    if isinstance(data, Dataset):
        yield from iterate_batches(random_subset(data, samples, seed), batch_size)
        return
    seen = 0
    for images, labels in iterate_batches(data, batch_size):
        if samples is not None and seen + len(images) > samples:
            images, labels = images[: samples - seen], labels[: samples - seen]
        if len(images):
            yield images, labels
        seen += len(images)
        if samples is not None and seen >= samples:
            return


def profile_activations(
    model: nn.Module,
    data: Dataset[Any] | Batches,
    device: torch.device | str,
    *,
    sites: Sequence[str] | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    value_samples: int = 200_000,
    samples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, ActivationProfile]:
    """Profile the outputs of ``sites`` (default: every activation call site, in execution order).

    ``data`` is a Dataset or an iterable of (images, labels) batches such as a DataLoader. ``samples``
    caps the number of images: a seeded random sample (``seed``) of a Dataset, so a split ordered by
    class is still represented; the first ones of an iterable of batches. ``sites`` may name any module
    of a rewritten model. The model's parameters are moved to ``device``; its train/eval mode is restored afterwards.
    """
    target = model if is_rewritten(model) else rewrite_activation_call_sites(model, copy_model=False)
    names = list(sites) if sites is not None else activation_call_sites(target)
    recorders = {name: _SiteRecorder(name, value_samples, seed + index) for index, name in enumerate(names)}
    handles = [target.get_submodule(name).register_forward_hook(recorder) for name, recorder in recorders.items()]
    was_training = target.training
    target.to(device).eval()
    try:
        with torch.inference_mode():
            for images, _ in _limited(data, batch_size, samples, seed):
                target(images.to(device, non_blocking=True))
    finally:
        for handle in handles:
            handle.remove()
        target.train(was_training)
    return {name: recorder.profile(quantiles) for name, recorder in recorders.items()}
