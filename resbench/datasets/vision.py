"""Datasets read through torchvision from ``--data-root``: MNIST, Fashion-MNIST, CIFAR-10/100, SVHN and
ImageNet-style folders.

Each gets the normalization customary for it; the training part of CIFAR and of image folders is
augmented (random crop and horizontal flip, as in He et al. 2016), the validation part carved from it is
not. Nothing is downloaded unless the ``download`` option is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from torch.utils.data import Dataset, Subset

from resbench.datasets.base import DatasetOptions, DatasetSplits, limit_test, stratified_split
from resbench.errors import UsageError

__all__ = ["VISION_DATASETS", "ImageFolderOptions", "VisionOptions", "VisionSpec", "imagefolder", "vision_factory"]


class VisionOptions(DatasetOptions):
    """Options of the torchvision datasets."""

    download: bool = Field(default=False, description="download into --data-root when missing")
    augment: bool = Field(default=True, description="augment the training part (where customary)")


class ImageFolderOptions(DatasetOptions):
    """Options of ``imagefolder``: ``DATA_ROOT/train/CLASS/*.jpg`` and ``DATA_ROOT/val/CLASS/*.jpg``."""

    train_dir: str = Field(default="train", description="training folder under --data-root")
    test_dir: str = Field(default="val", description="test folder under --data-root")
    image_size: int = Field(default=224, ge=8, le=1024, description="side of the square crop fed to the model")
    augment: bool = Field(default=True, description="random resized crop and flip on the training part")


@dataclass(frozen=True)
class VisionSpec:
    """How to read one torchvision dataset."""

    name: str
    class_name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    where: str
    flip: bool
    crop_padding: int = 0
    split_argument: str = "train"


VISION_DATASETS: dict[str, VisionSpec] = {
    spec.name: spec
    for spec in (
        VisionSpec("mnist", "MNIST", (1, 28, 28), 10, (0.1307,), (0.3081,), "MNIST/raw/ (the four idx files)",
                   flip=False),
        VisionSpec("fashion-mnist", "FashionMNIST", (1, 28, 28), 10, (0.2860,), (0.3530,),
                   "FashionMNIST/raw/ (the four idx files)", flip=False),
        VisionSpec("cifar10", "CIFAR10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                   "cifar-10-batches-py/ (from cifar-10-python.tar.gz)", flip=True, crop_padding=4),
        VisionSpec("cifar100", "CIFAR100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409),
                   (0.2673, 0.2564, 0.2762), "cifar-100-python/ (from cifar-100-python.tar.gz)", flip=True,
                   crop_padding=4),
        VisionSpec("svhn", "SVHN", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                   "train_32x32.mat and test_32x32.mat", flip=False, split_argument="split"),
    )
}


def _transforms(spec: VisionSpec, augment: bool) -> Callable[[Any], Any]:
    from torchvision import transforms

    steps: list[Any] = []
    if augment and spec.crop_padding:
        steps.append(transforms.RandomCrop(spec.image_shape[1], padding=spec.crop_padding))
    if augment and spec.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    return transforms.Compose(steps)


def _missing_root_message(name: str, where: str, data_root: Path | None) -> str:
    location = f"{data_root}" if data_root is not None else "--data-root DIR"
    return f"dataset {name!r} needs {where} in {location}, or the option download: true"


def _open(spec: VisionSpec, data_root: Path | None, train: bool, transform: Any, download: bool) -> Any:
    import torchvision.datasets

    if data_root is None:
        raise UsageError(_missing_root_message(spec.name, spec.where, None))
    split: dict[str, Any] = (
        {"split": "train" if train else "test"} if spec.split_argument == "split" else {"train": train}
    )
    dataset_class = getattr(torchvision.datasets, spec.class_name)
    try:
        return dataset_class(str(data_root), transform=transform, download=download, **split)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        raise UsageError(f"{_missing_root_message(spec.name, spec.where, data_root)} ({error})") from None
    except ImportError as error:
        raise UsageError(f"dataset {spec.name!r} needs an extra package: {error}") from None


def _labels(dataset: Any) -> list[int]:
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = dataset.labels
    return [int(label) for label in labels]


def _carve(
    plain: Dataset[Any], augmented: Dataset[Any], labels: list[int], options: DatasetOptions
) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """Training part (augmented), validation part and the training part with evaluation transforms."""
    kept, carved = stratified_split(labels, options.validation_fraction, options.split_seed)
    return Subset(augmented, kept.tolist()), Subset(plain, carved.tolist()), Subset(plain, kept.tolist())


def vision_factory(spec: VisionSpec) -> Callable[[VisionOptions, Path | None], DatasetSplits]:
    """The dataset factory for one torchvision dataset."""

    def factory(options: VisionOptions, data_root: Path | None = None) -> DatasetSplits:
        plain = _open(spec, data_root, True, _transforms(spec, False), options.download)
        augmented = _open(spec, data_root, True, _transforms(spec, options.augment), False)
        train, validation, train_plain = _carve(plain, augmented, _labels(plain), options)
        test = limit_test(_open(spec, data_root, False, _transforms(spec, False), options.download),
                          options.test_limit, options.split_seed)
        key = {"name": spec.name, "options": options.model_dump(mode="json", exclude={"test_limit"})}
        return DatasetSplits(spec.name, train, validation, test, spec.image_shape, spec.num_classes, key,
                             train_plain)

    factory.__doc__ = f"torchvision {spec.class_name} from --data-root ({spec.where})."
    return factory


# ImageNet statistics (the torchvision reference recipe).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _folder(root: Path, options: ImageFolderOptions, train: bool, augment: bool) -> Any:
    from torchvision import datasets, transforms

    size = options.image_size
    if augment:
        steps: list[Any] = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size)]
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    folder = root / (options.train_dir if train else options.test_dir)
    if not folder.is_dir():
        raise UsageError(
            f"dataset 'imagefolder' needs {folder} with one sub-folder of images per class"
        )
    try:
        return datasets.ImageFolder(str(folder), transform=transforms.Compose(steps))
    except (FileNotFoundError, OSError) as error:  # no class folders, or a class folder without images
        raise UsageError(f"dataset 'imagefolder' needs {folder} with one sub-folder of images per class ({error})"
                         ) from None


def imagefolder(options: ImageFolderOptions, data_root: Path | None = None) -> DatasetSplits:
    """ImageNet-style folders: DATA_ROOT/train/CLASS/*.jpg and DATA_ROOT/val/CLASS/*.jpg."""
    if data_root is None:
        raise UsageError(
            "dataset 'imagefolder' needs --data-root DIR with train/CLASS/*.jpg and val/CLASS/*.jpg"
        )
    plain = _folder(Path(data_root), options, True, False)
    augmented = _folder(Path(data_root), options, True, options.augment)
    train, validation, train_plain = _carve(plain, augmented, _labels(plain), options)
    test_folder = _folder(Path(data_root), options, False, False)
    if test_folder.classes != plain.classes:  # labels are class indices in sorted order: they must agree
        raise UsageError(
            f"dataset 'imagefolder': the class folders of {options.test_dir} "
            f"({', '.join(test_folder.classes)}) differ from those of {options.train_dir} "
            f"({', '.join(plain.classes)})"
        )
    test = limit_test(test_folder, options.test_limit, options.split_seed)
    key = {"name": "imagefolder", "root": str(Path(data_root).resolve()),
           "options": options.model_dump(mode="json", exclude={"test_limit"})}
    shape = (3, options.image_size, options.image_size)
    return DatasetSplits("imagefolder", train, validation, test, shape, len(plain.classes), key, train_plain)
