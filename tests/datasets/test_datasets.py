"""Dataset plugins: shapes, disjoint deterministic stratified splits, test limits, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from resbench.datasets import DatasetSplits, iterate_batches, load_dataset, stratified_split, tensor_view
from resbench.errors import UsageError


def _rows(dataset: TensorDataset) -> set[bytes]:
    return {image.numpy().tobytes() for image in dataset.tensors[0]}


@pytest.mark.parametrize(("name", "shape", "sizes"), [
    ("digits", (1, 8, 8), (1295, 143, 359)),
    ("mnist5k", (1, 28, 28), (3600, 400, 1000)),
])
def test_embedded_splits_are_disjoint_and_complete(name: str, shape: tuple[int, int, int],
                                                   sizes: tuple[int, int, int]) -> None:
    splits = load_dataset(name)
    parts = (splits.train, splits.validation, splits.test)
    assert splits.image_shape == shape and splits.num_classes == 10
    assert tuple(len(part) for part in parts) == sizes
    assert all(isinstance(part, TensorDataset) for part in parts)
    images = [_rows(part) for part in parts]  # type: ignore[arg-type]
    assert not images[0] & images[1] and not images[0] & images[2] and not images[1] & images[2]
    assert parts[0].tensors[0].dtype == torch.float32 and parts[0].tensors[1].dtype == torch.int64


def test_embedded_splits_are_deterministic_and_stratified() -> None:
    first, second = load_dataset("mnist5k"), load_dataset("mnist5k")
    for a, b in ((first.train, second.train), (first.validation, second.validation), (first.test, second.test)):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert torch.bincount(first.test.tensors[1]).tolist() == [100] * 10
    assert torch.bincount(first.validation.tensors[1]).tolist() == [40] * 10
    other = load_dataset("mnist5k", {"split_seed": 1})
    assert not torch.equal(other.test.tensors[1], first.test.tensors[1]) or not torch.equal(
        other.test.tensors[0], first.test.tensors[0])


def test_mnist5k_is_normalized_like_mnist() -> None:
    images = load_dataset("mnist5k").train.tensors[0]
    assert abs(float(images.mean())) < 0.1 and 0.9 < float(images.std()) < 1.1


def test_test_limit_is_a_seeded_class_stratified_sample_and_not_the_key() -> None:
    """mnist5k's test split is ordered by class: a prefix of 300 would hold digits 0 to 2 only."""
    full, limited = load_dataset("mnist5k"), load_dataset("mnist5k", {"test_limit": 300})
    assert len(limited.test) == 300
    full_counts = torch.bincount(full.test.tensors[1], minlength=10).double()
    counts = torch.bincount(limited.test.tensors[1], minlength=10).double()
    assert (counts > 0).all()
    assert torch.allclose(counts, full_counts * 300 / full_counts.sum(), atol=1.0)  # proportional allocation
    again = load_dataset("mnist5k", {"test_limit": 300})
    assert torch.equal(again.test.tensors[0], limited.test.tensors[0])
    other = load_dataset("mnist5k", {"test_limit": 300, "split_seed": 1})
    assert not torch.equal(other.test.tensors[0], limited.test.tensors[0])
    assert limited.key == full.key and "test_limit" not in limited.key["options"]


def test_synthetic_any_shape_seeded() -> None:
    options = {"channels": 3, "height": 5, "width": 7, "num_classes": 4, "train_size": 40, "test_size": 9}
    first, second = load_dataset("synthetic", options), load_dataset("synthetic", options)
    assert first.image_shape == (3, 5, 7) and first.num_classes == 4
    assert len(first.train) + len(first.validation) == 40 and len(first.test) == 9
    assert torch.equal(first.train.tensors[0], second.train.tensors[0])
    assert not torch.equal(load_dataset("synthetic", {**options, "seed": 1}).test.tensors[0], first.test.tensors[0])


def test_stratified_split_is_disjoint_and_per_class() -> None:
    labels = [0] * 10 + [1] * 20 + [2] * 2
    kept, carved = stratified_split(labels, 0.2, seed=3)
    assert not set(kept) & set(carved) and len(kept) + len(carved) == len(labels)
    assert sorted(labels[i] for i in carved) == [0, 0, 1, 1, 1, 1, 2]
    again = stratified_split(labels, 0.2, seed=3)
    assert kept.tolist() == again[0].tolist() and carved.tolist() == again[1].tolist()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder"])
def test_torchvision_dataset_without_root_is_one_clear_line(name: str, tmp_path: Path) -> None:
    for root in (None, tmp_path):
        with pytest.raises(UsageError) as raised:
            load_dataset(name, {}, root)
        message = str(raised.value)
        assert "\n" not in message and name in message
        assert ("--data-root" in message) or (str(tmp_path) in message)


def test_imagefolder_reads_class_folders(tmp_path: Path) -> None:
    from PIL import Image

    for part in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / part / label
            folder.mkdir(parents=True)
            for index in range(5):
                Image.new("RGB", (12, 12), (index * 40, 0, 0)).save(folder / f"{index}.png")
    splits = load_dataset("imagefolder", {"image_size": 8, "validation_fraction": 0.2}, tmp_path)
    assert isinstance(splits, DatasetSplits) and splits.num_classes == 2 and splits.image_shape == (3, 8, 8)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (8, 2, 10)
    images, labels = next(iterate_batches(splits.test, 4))
    assert images.shape == (4, 3, 8, 8) and labels.dtype == torch.int64


def _image_folders(root: Path, classes: dict[str, list[str]]) -> None:
    from PIL import Image

    for part, labels in classes.items():
        (root / part).mkdir(parents=True, exist_ok=True)
        for label in labels:
            (root / part / label).mkdir()
            for index in range(3):
                Image.new("RGB", (12, 12), (index * 40, 0, 0)).save(root / part / label / f"{index}.png")


def test_imagefolder_without_class_folders_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(UsageError, match="one sub-folder of images per class") as raised:
        load_dataset("imagefolder", {"image_size": 8}, tmp_path)
    assert "\n" not in str(raised.value)


def test_imagefolder_test_classes_must_match_training_classes(tmp_path: Path) -> None:
    """Labels are indices into the sorted class folders: a missing test class would shift every label."""
    _image_folders(tmp_path, {"train": ["ant", "bee", "cat"], "val": ["bee", "cat"]})
    with pytest.raises(UsageError, match=r"class folders of val \(bee, cat\) differ from those of train"):
        load_dataset("imagefolder", {"image_size": 8}, tmp_path)


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="test_limit"):
        load_dataset("digits", {"test_limit": 0})
    with pytest.raises(UsageError, match="unknown option"):
        load_dataset("digits", {"colour": True})
    with pytest.raises(UsageError, match="did you mean"):
        load_dataset("digitz")


def test_iterate_batches_fast_path_matches_dataloader_order() -> None:
    splits = load_dataset("synthetic", {"train_size": 30})
    view = tensor_view(splits.train)
    assert view is not None
    batches = list(iterate_batches(splits.train, 8))
    size = len(view[1])
    assert [len(labels) for _, labels in batches] == [8] * (size // 8) + ([size % 8] if size % 8 else [])
    assert torch.equal(torch.cat([images for images, _ in batches]), view[0])
