"""Dataset plugins: every dataset gives train, validation (carved from train) and test splits.

Built-in datasets are registered through :func:`register_datasets`, the same hook third-party plugins
implement. :func:`load_dataset` looks a name up in the registry, validates its options and loads it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from resbench.datasets.base import TEST_SUBSET, DatasetOptions, DatasetSplits, limit_test, stratified_split
from resbench.datasets.embedded import (
    DigitsOptions,
    Mnist5kOptions,
    SyntheticOptions,
    digits,
    mnist5k,
    synthetic,
)
from resbench.datasets.files import FILE_DATASET, FilesOptions, files
from resbench.datasets.loading import iterate_batches, tensor_view
from resbench.datasets.vision import (
    VISION_DATASETS,
    ImageFolderOptions,
    VisionOptions,
    imagefolder,
    vision_factory,
)
from resbench.hookspecs import Register
from resbench.plugins import hookimpl

__all__ = [
    "TEST_SUBSET",
    "DatasetOptions",
    "DatasetSplits",
    "iterate_batches",
    "limit_test",
    "load_dataset",
    "register_datasets",
    "stratified_split",
    "tensor_view",
]


@hookimpl
def register_datasets(register: Register) -> None:
    """The built-in datasets."""
    register("digits", digits, options=DigitsOptions)
    register("mnist5k", mnist5k, options=Mnist5kOptions)
    register("synthetic", synthetic, options=SyntheticOptions)
    for name, spec in VISION_DATASETS.items():
        register(name, vision_factory(spec), options=VisionOptions)
    register("imagefolder", imagefolder, options=ImageFolderOptions)
    register(FILE_DATASET, files, options=FilesOptions)


def load_dataset(name: str, options: dict[str, Any] | None = None, data_root: Path | None = None) -> DatasetSplits:
    """Load the dataset registered as ``name`` with validated ``options``.

    Unknown names and invalid options raise :class:`resbench.errors.UsageError` with one clear line.
    """
    from resbench.plugins import get_registries, provider_versions

    root = Path(data_root) if data_root is not None else None
    built = get_registries().datasets.build(name, options, where=f"dataset {name}",
                                            call=lambda factory, validated: factory(validated, root))
    splits: DatasetSplits = built.value
    # Baselines are cached under the key: data from another version of the providing plugin is other data.
    key = {**(splits.key or {"name": splits.name}), "plugins": provider_versions(("datasets", name))}
    return dataclasses.replace(splits, key=key)
