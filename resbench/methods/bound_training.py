"""Training bounds with every weight frozen: the loop FitAct's and ProAct's optimizers share.

Weights, biases and batch-norm statistics stay fixed: the model is in eval mode throughout (batch norm
uses its running statistics and does not update them), only the given bound tensors require gradients.
Bounds are kept non-negative after every step (a negative bound would switch a ReLU site off).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from resbench.datasets.loading import iterate_batches
from resbench.methods.base import PrepareContext
from resbench.training import evaluate

__all__ = ["LossFunction", "train_bounds", "validation_accuracy"]

#: loss(logits, labels, images) -> scalar loss of one batch
LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def validation_accuracy(model: nn.Module, context: PrepareContext) -> float:
    """Top-1 accuracy (percent) on the validation split (carved from the training data)."""
    return evaluate(model, context.validation, context.device, context.batch_size)


def _frozen_except(model: nn.Module, bounds: Sequence[torch.Tensor]) -> list[bool]:
    previous = [parameter.requires_grad for parameter in model.parameters()]
    trainable = {id(bound) for bound in bounds}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    return previous


def train_bounds(
    model: nn.Module,
    bounds: Sequence[torch.Tensor],
    loss_function: LossFunction,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    context: PrepareContext,
    *,
    batch_size: int = 128,
    seed: int = 0,
    description: str = "bounds",
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """Train ``bounds`` (parameters of ``model``) for ``epochs`` over the training split, cosine schedule.

    Batches are shuffled by a generator seeded with ``seed``: the same call gives the same bounds.
    ``after_epoch(epoch)`` runs after each epoch (model selection on the validation split, say).
    """
    previous = _frozen_except(model, bounds)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, math.ceil(len(context.train) / batch_size))  # type: ignore[arg-type]
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    was_training = model.training
    model.eval()
    progress = tqdm(total=epochs * steps_per_epoch, desc=description, disable=not context.progress, leave=False)
    try:
        for epoch in range(epochs):
            for images, labels in iterate_batches(context.train, batch_size, shuffle=True, generator=generator):
                images, labels = images.to(context.device), labels.to(context.device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_function(model(images), labels, images)
                loss.backward()
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    for bound in bounds:
                        bound.clamp_(min=0.0)
                progress.update(1)
            if after_epoch is not None:
                after_epoch(epoch)
    finally:
        progress.close()
        model.train(was_training)
        for parameter, requires_grad in zip(model.parameters(), previous, strict=True):
            parameter.requires_grad_(requires_grad)
