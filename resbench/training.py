"""Baseline training: a standard recipe per model family, deterministic for a seed, cached.

Recipes (``RECIPES``) follow the usual practice for each family: Adam for the small MNIST-class
networks; SGD with momentum 0.9, weight decay and a cosine schedule for the CIFAR networks (He et al.
2016 use SGD, momentum 0.9, weight decay 1e-4 and batch 128 for CIFAR ResNets; Loshchilov & Hutter 2017
for the cosine schedule). The model with the best validation accuracy over the epochs is kept (the
validation split is carved from the training data). A model factory names its family through a
``training_family`` attribute (see :func:`resbench.models.training_family`); others get ``generic``.

Trained baselines go to the artifact cache keyed by model, model options, image shape, class count,
dataset key, seed, training options and ``RECIPE_VERSION``: bump it when the training loop changes.
Runs are deterministic for a seed on one device type with deterministic kernels (cuDNN is put in
deterministic mode while training).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from resbench.cache import ArtifactCache
from resbench.datasets import DatasetSplits, iterate_batches
from resbench.datasets.loading import Batches
from resbench.models import build_model, model_training_family
from resbench.options import Options, validate_options

__all__ = [
    "RECIPES",
    "RECIPE_VERSION",
    "Baseline",
    "TrainingOptions",
    "TrainingStep",
    "collect_logits",
    "cross_entropy_step",
    "evaluate",
    "load_or_train_baseline",
    "random_shift",
    "recipe_for",
    "train_model",
]

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1


class TrainingOptions(Options):
    """How a baseline is trained. Defaults come from the model family's recipe (``RECIPES``)."""

    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="peak learning rate")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD momentum")
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    schedule: Literal["cosine", "multistep", "constant"] = Field(
        default="cosine", description="cosine annealing to 0, or x0.1 at 50% and 75% of training (He et al. 2016)"
    )
    warmup_epochs: int = Field(default=0, ge=0, description="linear learning-rate warm-up")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    augment_shift: int = Field(
        default=0, ge=0, le=16, description="random translation by up to N pixels of in-memory training images"
    )
    select_on_validation: bool = Field(default=True, description="keep the epoch with the best validation accuracy")
    num_workers: int = Field(default=0, ge=0, le=64, description="DataLoader workers for datasets read from disk")


RECIPES: dict[str, dict[str, Any]] = {
    "test": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 1e-2},
    "mlp": {"epochs": 40, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
    "lenet": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "augment_shift": 2},
    "cifar": {"epochs": 100, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4,
              "nesterov": True},
    "resnet-cifar": {"epochs": 160, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4},
    "imagenet": {"epochs": 90, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
                 "warmup_epochs": 2},
    "mobilenet": {"epochs": 150, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 4e-5,
                  "warmup_epochs": 2},
    "vit": {"epochs": 30, "batch_size": 64, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05,
            "warmup_epochs": 2, "augment_shift": 2},
    "generic": {"epochs": 20, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
}


def recipe_for(model_name: str, overrides: dict[str, Any] | TrainingOptions | None = None) -> TrainingOptions:
    """The training options of ``model_name``: its family's recipe updated with ``overrides``."""
    if isinstance(overrides, TrainingOptions):
        return overrides
    family = model_training_family(model_name)
    raw = {**RECIPES.get(family, RECIPES["generic"]), **(overrides or {})}
    options = validate_options(TrainingOptions, raw, f"training of {model_name}")
    assert isinstance(options, TrainingOptions)
    return options


# ---------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------


def collect_logits(
    model: nn.Module, data: Dataset[Any] | Batches, device: torch.device | str, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) on the CPU for all of ``data``, streamed in batches, in eval mode under inference mode.

    For data already on the device, :func:`resbench.engine.evaluation.predict_logits` avoids the copies.
    """
    was_training = model.training
    model.eval()
    logits: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for images, targets in iterate_batches(data, batch_size):
                logits.append(model(images.to(device, non_blocking=True)).float().cpu())
                labels.append(targets)
    finally:
        model.train(was_training)
    if not logits:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module, data: Dataset[Any] | Batches, device: torch.device | str, batch_size: int = 1024
) -> float:
    """Top-1 accuracy in percent; a sample with non-finite logits counts as wrong."""
    logits, labels = collect_logits(model, data, device, batch_size)
    if len(labels) == 0:
        return float("nan")
    correct = (logits.argmax(dim=1) == labels) & torch.isfinite(logits).all(dim=1)
    return 100.0 * float(correct.float().mean())


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def _optimizer(model: nn.Module, options: TrainingOptions) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if options.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=options.lr, momentum=options.momentum,
                               nesterov=options.nesterov and options.momentum > 0,
                               weight_decay=options.weight_decay)
    optimizer_class = torch.optim.Adam if options.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(parameters, lr=options.lr, weight_decay=options.weight_decay)


def learning_rate_factor(options: TrainingOptions, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimizer ``step`` (0-based): warm-up, then the schedule."""
    warmup = options.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if options.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if options.schedule == "multistep":
        return 0.1 ** sum(progress >= milestone for milestone in (0.5, 0.75))
    return 1.0


#: One optimizer step on a batch of ``(images, labels)``: forward, backward and ``optimizer.step()``;
#: returns the loss and the logits (for the progress bar). :func:`cross_entropy_step` is the plain one;
#: fault-aware training (:mod:`resbench.methods.fault_aware`) passes its own to :func:`train_model`.
TrainingStep = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer],
                        tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_step(label_smoothing: float = 0.0) -> TrainingStep:
    """The plain training step: cross-entropy (with ``label_smoothing``), backward, one optimizer step."""

    def step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss, logits

    return step


@contextlib.contextmanager
def _deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators without disturbing the caller's, and make cuDNN deterministic."""
    devices = [device.index or 0] if device.type == "cuda" else []
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@dataclass
class TrainingResult:
    """What training reports: the best validation accuracy, its epoch, per-epoch history and time."""

    validation_accuracy: float
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class _Progress:
    """A tqdm bar over all optimizer steps showing loss, accuracy and (from tqdm) time left."""

    def __init__(self, total: int, description: str, enabled: bool):
        self.bar = tqdm(total=total, desc=description, unit="batch", disable=not enabled, leave=False,
                        dynamic_ncols=True)
        self.loss = 0.0
        self.correct = 0
        self.seen = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss = 0.9 * self.loss + 0.1 * float(loss) if self.seen else float(loss)
        self.correct += int((logits.argmax(1) == labels).sum())
        self.seen += len(labels)
        self.bar.update(1)
        if self.bar.n % 10 == 0:
            self.bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{100 * self.correct / self.seen:.1f}%")

    def end_epoch(self, epoch: int, validation_accuracy: float) -> dict[str, float]:
        record = {"epoch": epoch, "loss": self.loss, "train_accuracy": 100 * self.correct / max(1, self.seen),
                  "validation_accuracy": validation_accuracy}
        self.bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{record['train_accuracy']:.1f}%",
                             val=f"{validation_accuracy:.1f}%")
        self.correct = self.seen = 0
        return record


def random_shift(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (N, C, H, W) by up to ``shift`` pixels each way, repeating the border pixels
    (the background, for digits), the classic augmentation for MNIST-like data (Simard et al. 2003).
    """
    count, channels, height, width = images.shape
    padded = F.pad(images, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (2, count), generator=generator).to(images.device)
    rows = (offsets[0, :, None] + torch.arange(height, device=images.device))[:, None, :, None]
    columns = (offsets[1, :, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(count, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, columns]


def _steps_per_epoch(dataset: Dataset[Any], batch_size: int) -> int:
    return max(1, math.ceil(len(dataset) / batch_size))  # type: ignore[arg-type]


def train_model(
    model: nn.Module,
    splits: DatasetSplits,
    options: TrainingOptions,
    device: torch.device | str,
    *,
    seed: int = 0,
    progress: bool = True,
    description: str = "training",
    step: TrainingStep | None = None,
) -> TrainingResult:
    """Train ``model`` in place on ``splits.train``; keep the epoch best on ``splits.validation``.

    ``step`` runs each optimizer step (default: :func:`cross_entropy_step` with the options' label smoothing).
    """
    device = torch.device(device)
    started = time.perf_counter()
    model.to(device)
    optimizer = _optimizer(model, options)
    steps = _steps_per_epoch(splits.train, options.batch_size)
    total = steps * options.epochs
    bar = _Progress(total, description, progress)
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, 0, None)
    history = []
    generator = torch.Generator().manual_seed(seed)
    step = step or cross_entropy_step(options.label_smoothing)
    with _deterministic(seed, device):
        for epoch in range(1, options.epochs + 1):
            _train_epoch(model, splits.train, options, optimizer, step, device, generator, bar,
                         (epoch - 1) * steps, total, steps)
            accuracy = evaluate(model, splits.validation, device)
            history.append(bar.end_epoch(epoch, accuracy))
            if not options.select_on_validation or accuracy > best[0]:
                best = (accuracy, epoch, copy.deepcopy(model.state_dict()))
    bar.bar.close()
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return TrainingResult(best[0], best[1], time.perf_counter() - started, history)


def _train_epoch(
    model: nn.Module,
    train: Dataset[Any],
    options: TrainingOptions,
    optimizer: torch.optim.Optimizer,
    step_function: TrainingStep,
    device: torch.device,
    generator: torch.Generator,
    bar: _Progress,
    first_step: int,
    total_steps: int,
    steps_per_epoch: int,
) -> None:
    model.train()
    step = first_step
    for images, labels in iterate_batches(train, options.batch_size, shuffle=True, generator=generator,
                                          num_workers=options.num_workers):
        if len(labels) < 2:  # batch norm cannot train on a single sample
            continue
        for group in optimizer.param_groups:
            group["lr"] = options.lr * learning_rate_factor(options, step, total_steps, steps_per_epoch)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if options.augment_shift and images.dim() == 4:
            images = random_shift(images, options.augment_shift, generator)
        loss, logits = step_function(model, images, labels, optimizer)
        bar.update(loss.detach(), logits.detach(), labels)
        step += 1


# ---------------------------------------------------------------------------------------------------------
# Cached baselines
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    """A trained baseline model (eval mode, on the device) and what is known about it."""

    model: nn.Module
    metadata: dict[str, Any]
    cache_hit: bool
    key: dict[str, Any]


def baseline_key(
    model_name: str, model_options: dict[str, Any], splits: DatasetSplits, seed: int, options: TrainingOptions
) -> dict[str, Any]:
    """Everything that determines a trained baseline (the artifact cache key)."""
    from resbench.plugins import get_registries, provider_versions

    _, validated = get_registries().models.options_for(model_name, model_options, where=f"model {model_name}")
    return {
        "model": model_name,
        "model_plugins": provider_versions(("models", model_name)),
        "model_options": validated.model_dump(mode="json"),
        "image_shape": list(splits.image_shape),
        "num_classes": splits.num_classes,
        "dataset": splits.key or {"name": splits.name},
        "seed": seed,
        "training": options.model_dump(mode="json"),
        "recipe_version": RECIPE_VERSION,
    }


def load_or_train_baseline(
    model_name: str,
    model_options: dict[str, Any] | None,
    splits: DatasetSplits,
    *,
    seed: int,
    cache: ArtifactCache,
    device: torch.device | str,
    training_options: dict[str, Any] | TrainingOptions | None = None,
    progress: bool = True,
) -> Baseline:
    """The trained baseline for (model, dataset, seed): from the cache, or trained now and cached."""
    options = recipe_for(model_name, training_options)
    key = baseline_key(model_name, dict(model_options or {}), splits, seed, options)
    with _deterministic(seed, torch.device(device)):
        model = build_model(model_name, splits.image_shape, splits.num_classes, model_options)

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        result = train_model(model, splits, options, device, seed=seed, progress=progress,
                             description=f"train {model_name} on {splits.name}")
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        metadata = {"validation_accuracy": result.validation_accuracy, "best_epoch": result.best_epoch,
                    "train_seconds": round(result.seconds, 3), "device": str(device), "history": result.history}
        return state, metadata

    state, metadata, hit = cache.load_or_build("baseline", key, build)
    model.load_state_dict(state)
    logger.info("baseline %s on %s: validation accuracy %.2f%% (%s)", model_name, splits.name,
                metadata.get("validation_accuracy", float("nan")), "cached" if hit else "trained")
    return Baseline(model.to(device).eval(), metadata, hit, key)
