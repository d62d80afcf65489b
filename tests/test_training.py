"""Baseline training: recipes, determinism, caching, evaluation helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from resbench.cache import ArtifactCache
from resbench.datasets import load_dataset
from resbench.errors import UsageError
from resbench.training import (
    TrainingOptions,
    collect_logits,
    evaluate,
    learning_rate_factor,
    load_or_train_baseline,
    recipe_for,
)

SYNTHETIC = {"channels": 1, "height": 6, "width": 6, "num_classes": 3, "train_size": 240, "test_size": 60,
             "separation": 1.5}


def test_recipes_by_family_and_overrides() -> None:
    assert recipe_for("lenet5").optimizer == "adam"
    resnet = recipe_for("resnet20")
    assert (resnet.optimizer, resnet.lr, resnet.weight_decay, resnet.batch_size) == ("sgd", 0.1, 1e-4, 128)
    assert recipe_for("lenet5", {"epochs": 3}).epochs == 3
    with pytest.raises(UsageError, match="epochs"):
        recipe_for("lenet5", {"epochs": 0})


def test_learning_rate_schedules() -> None:
    cosine = TrainingOptions(schedule="cosine", warmup_epochs=1)
    assert learning_rate_factor(cosine, 0, 100, 10) == pytest.approx(0.1)
    assert learning_rate_factor(cosine, 10, 100, 10) == pytest.approx(1.0)
    assert learning_rate_factor(cosine, 99, 100, 10) < 0.01
    steps = TrainingOptions(schedule="multistep")
    assert [learning_rate_factor(steps, s, 100, 10) for s in (0, 50, 75)] == pytest.approx([1, 0.1, 0.01])


def test_training_is_deterministic_learns_and_caches(tmp_path: Path) -> None:
    splits = load_dataset("synthetic", SYNTHETIC)
    options = {"epochs": 3}
    first = load_or_train_baseline("test-cnn", {}, splits, seed=1, cache=ArtifactCache(tmp_path / "a"),
                                   device="cpu", training_options=options, progress=False)
    second = load_or_train_baseline("test-cnn", {}, splits, seed=1, cache=ArtifactCache(tmp_path / "b"),
                                    device="cpu", training_options=options, progress=False)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert not first.cache_hit and first.metadata["validation_accuracy"] > 50
    assert len(first.metadata["history"]) == 3 and not first.model.training
    again = load_or_train_baseline("test-cnn", {}, splits, seed=1, cache=ArtifactCache(tmp_path / "a"),
                                   device="cpu", training_options=options, progress=False)
    assert again.cache_hit and again.metadata == first.metadata
    assert evaluate(again.model, splits.test, "cpu") == evaluate(first.model, splits.test, "cpu")
    other_seed = load_or_train_baseline("test-cnn", {}, splits, seed=2, cache=ArtifactCache(tmp_path / "a"),
                                        device="cpu", training_options=options, progress=False)
    assert not other_seed.cache_hit and other_seed.key["seed"] == 2


def test_training_does_not_disturb_the_global_generator(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    splits = load_dataset("synthetic", SYNTHETIC)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = load_or_train_baseline("test-mlp", None, splits, seed=0, cache=ArtifactCache(tmp_path), device="cpu",
                                   training_options={"epochs": 1}, progress=True).model
    assert torch.equal(torch.rand(3), expected)
    assert "train test-mlp on synthetic" in capsys.readouterr().err
    assert isinstance(model, torch.nn.Module)


def test_collect_logits_and_evaluate_accept_datasets_and_loaders() -> None:
    splits = load_dataset("synthetic", SYNTHETIC)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    logits, labels = collect_logits(model, splits.test, "cpu", batch_size=7)
    assert logits.shape == (60, 3) and torch.equal(labels, splits.test.tensors[1])
    loader_logits, _ = collect_logits(model, DataLoader(splits.test, batch_size=16), "cpu")
    assert torch.allclose(logits, loader_logits)
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    assert evaluate(model, splits.test, "cpu") == 0.0
