"""Artifact cache: hits, atomic entries, corrupt or partial entries rebuilt and never loaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from resbench.cache import CACHE_DIR_VARIABLE, ArtifactCache, key_hash

KEY = {"model": "lenet5", "seed": 0, "options": {"width": 2}}


class Builder:
    """Counts builds; returns a small state dict and metrics."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        self.calls += 1
        return {"weight": torch.arange(1000, dtype=torch.float32)}, {"accuracy": 97.5, "call": self.calls}


def test_second_run_is_a_hit(tmp_path: Path) -> None:
    cache, build = ArtifactCache(tmp_path), Builder()
    payload, metadata, hit = cache.load_or_build("baseline", KEY, build)
    assert not hit and metadata == {"accuracy": 97.5, "call": 1}
    again, metadata_again, hit_again = ArtifactCache(tmp_path).load_or_build("baseline", KEY, build)
    assert hit_again and build.calls == 1 and metadata_again == metadata
    assert torch.equal(again["weight"], payload["weight"])


def test_metadata_file_beside_payload(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    cache.load_or_build("baseline", KEY, Builder())
    entry = cache.entry("baseline", KEY)
    record = json.loads(entry.metadata_path.read_text())
    assert record["key"] == KEY and record["kind"] == "baseline" and record["metadata"]["accuracy"] == 97.5
    assert (entry.directory / record["payload"]).stat().st_size == record["size_bytes"]
    assert {"sha256", "created", "build_seconds", "resbench_version", "torch_version"} <= set(record)
    assert not list(entry.directory.glob("*.tmp"))


def test_key_order_does_not_matter_and_values_do() -> None:
    assert key_hash("a", {"x": 1, "y": [1, 2]}) == key_hash("a", {"y": [1, 2], "x": 1})
    assert key_hash("a", {"x": 1}) != key_hash("a", {"x": 2}) != key_hash("b", {"x": 2})
    with pytest.raises(ValueError, match="plain JSON"):
        key_hash("a", {"x": object()})


def _payload_path(cache: ArtifactCache) -> Path:
    entry = cache.entry("baseline", KEY)
    return entry.directory / json.loads(entry.metadata_path.read_text())["payload"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_metadata", "garble_metadata", "drop_payload"])
def test_corrupt_entry_is_reported_and_rebuilt(tmp_path: Path, damage: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    cache, build = ArtifactCache(tmp_path), Builder()
    cache.load_or_build("baseline", KEY, build)
    payload_path, entry = _payload_path(cache), cache.entry("baseline", KEY)
    data = payload_path.read_bytes()
    if damage == "truncate":
        payload_path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        payload_path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif damage == "drop_metadata":
        entry.metadata_path.unlink()
    elif damage == "garble_metadata":
        entry.metadata_path.write_text("{not json")
    else:
        payload_path.unlink()
    with caplog.at_level(logging.WARNING, logger="resbench.cache"):
        payload, metadata, hit = cache.load_or_build("baseline", KEY, build)
    assert not hit and build.calls == 2 and metadata["call"] == 2
    assert torch.equal(payload["weight"], torch.arange(1000, dtype=torch.float32))
    assert "rebuilding" in caplog.text
    assert cache.load_or_build("baseline", KEY, build)[2] is True
    assert len(list(entry.directory.glob(f"{entry.hash}-*.pt"))) == 1


def test_non_json_metadata_writes_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(TypeError):
        cache.load_or_build("baseline", KEY, lambda: ({"w": torch.zeros(1)}, {"bad": object()}))
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.json"))


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "env"))
    assert ArtifactCache().root == tmp_path / "env"
    assert ArtifactCache(tmp_path / "arg").root == tmp_path / "arg"
    monkeypatch.delenv(CACHE_DIR_VARIABLE)
    assert ArtifactCache().root == Path(".resbench-cache")
