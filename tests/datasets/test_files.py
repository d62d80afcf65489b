"""Datasets from the user's files (``files``): .npz and .pt, the split given or stated, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from resbench.cli import main
from resbench.config import parse_suite
from resbench.datasets import load_dataset, tensor_view
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.run.cells import CellKeys, Group

RNG = np.random.default_rng(0)


def _arrays(count: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(count, 1, 6, 6)).astype(np.float32), np.arange(count) % classes


def _given(path: Path) -> dict[str, np.ndarray]:
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = _arrays(60), _arrays(15), _arrays(21)
    arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test,
              "y_test": y_test}
    np.savez(path, **arrays)
    return arrays


def test_npz_dataset_round_trips(tmp_path: Path) -> None:
    arrays = _given(tmp_path / "data.npz")
    splits = load_dataset("files", {"path": str(tmp_path / "data.npz"), "standardize": False})
    for split, name in ((splits.train, "train"), (splits.validation, "val"), (splits.test, "test")):
        view = tensor_view(split)
        assert view is not None
        assert torch.equal(view[0], torch.from_numpy(arrays[f"x_{name}"]))
        assert torch.equal(view[1], torch.from_numpy(arrays[f"y_{name}"]).long())
    assert splits.image_shape == (1, 6, 6) and splits.num_classes == 3


def test_pt_file_reads_like_npz(tmp_path: Path) -> None:
    arrays = _given(tmp_path / "data.npz")
    torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, tmp_path / "data.pt")
    from_npz = load_dataset("files", {"path": str(tmp_path / "data.npz")})
    from_pt = load_dataset("files", {"path": str(tmp_path / "data.pt")})
    for first, second in zip((from_npz.train, from_npz.test), (from_pt.train, from_pt.test), strict=True):
        assert torch.equal(tensor_view(first)[0], tensor_view(second)[0])  # type: ignore[index]


def test_stated_split_carves_disjoint_stratified_splits(tmp_path: Path) -> None:
    images, labels = _arrays(100, classes=4)
    images[:, 0, 0, 0] = np.arange(100)  # each image identifiable
    np.savez(tmp_path / "pool.npz", x=images, y=labels)
    splits = load_dataset("files", {"path": str(tmp_path / "pool.npz"), "test_fraction": 0.2,
                                    "validation_fraction": 0.25, "standardize": False})
    seen = [tensor_view(split)[0][:, 0, 0, 0].long().tolist()  # type: ignore[index]
            for split in (splits.train, splits.validation, splits.test)]
    assert [len(ids) for ids in seen] == [60, 20, 20]
    assert sorted(index for ids in seen for index in ids) == list(range(100))
    assert np.bincount(labels[seen[2]]).tolist() == [5, 5, 5, 5]


def test_standardize_uses_training_statistics_only(tmp_path: Path) -> None:
    arrays = _given(tmp_path / "data.npz")
    splits = load_dataset("files", {"path": str(tmp_path / "data.npz")})
    train = tensor_view(splits.train)[0]  # type: ignore[index]
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-5
    mean, std = arrays["x_train"].mean(), arrays["x_train"].std(ddof=1)
    expected = (arrays["x_test"] - mean) / std
    assert np.allclose(tensor_view(splits.test)[0].numpy(), expected, atol=1e-5)  # type: ignore[index]


def test_run_on_a_file_named_as_dataset(tmp_path: Path) -> None:
    _given(tmp_path / "data.npz")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"models: [test-mlp]\ndatasets: [{tmp_path / 'data.npz'}]\nbers: [1e-3]\ntrials: 2\n"
                     "training: {epochs: 1}\n", encoding="utf-8")
    assert main(["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "c"),
                 "--no-progress", "--device", "cpu"]) == 0


def test_identity_holds_the_file_checksum(tmp_path: Path) -> None:
    def definition() -> str:
        suite = parse_suite({"datasets": [str(tmp_path / "data.npz")]}, "test")
        group = Group(suite.methods[0], suite.models[0], suite.datasets[0], suite.formats[0])
        return CellKeys(suite, FaultSpaceOptions(), None).definition(group, suite.faults[0], 1e-5)

    _given(tmp_path / "data.npz")
    first = definition()
    _given(tmp_path / "data.npz")  # same path, other data
    assert "file_sha256" in first and definition() != first


@pytest.mark.parametrize(("arrays", "problem"), [
    ({"images": np.zeros((4, 1, 2, 2))}, "expected x_train, y_train, x_test, y_test"),
    ({"x": np.zeros((4, 1, 2, 2)), "y": np.zeros(4)}, "must hold class indices"),
    ({"x": np.zeros((4, 1, 2, 2)), "y": np.zeros(3, dtype=np.int64)}, "one label per image"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4, dtype=np.int64)}, "expected (N, C, H, W) or (N, H, W)"),
])
def test_bad_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        arrays: dict[str, np.ndarray], problem: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    status = main(["run", "--datasets", str(tmp_path / "bad.npz"), "--models", "test-mlp", "--store",
                   str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and len(error.splitlines()) == 1 and problem in error, error
    assert not (tmp_path / "r.sqlite").exists()
