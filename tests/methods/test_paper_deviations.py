"""Each deviation from a paper is fixed or an option whose default follows the paper, named in the notes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from resbench_plugins import clipact, fitact
from resbench_plugins.ranger import FollowingClamp
from torch import nn
from torch.utils.data import TensorDataset

from resbench.engine.activation_injection import ActivationInjector
from resbench.engine.faults import resolve_fault_model
from resbench.engine.formats import resolve_format
from resbench.errors import UsageError
from resbench.methods import PrepareContext, activation_call_sites, bounded_sites
from resbench.methods.bound_training import validation_accuracy
from resbench.plugins import get_registries


def _context() -> PrepareContext:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 3
    images = torch.rand(96, 1, 8, 8, generator=generator) + labels.view(-1, 1, 1, 1).float()
    data = TensorDataset(images, labels)
    return PrepareContext(train=data, validation=data, image_shape=(1, 8, 8), num_classes=3,
                          device=torch.device("cpu"), seed=1, number_format=resolve_format("fp32"), batch_size=32)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)).eval()


def _method(name: str, options: dict[str, Any] | None = None) -> Any:
    return get_registries().methods.build(name, options or {}).value


def test_fitact_measures_its_tolerance_from_the_original_model_by_default() -> None:
    context = _context()
    original = validation_accuracy(_model(), context)
    method = _method("fitact")
    model = method.build(_model(), context)
    metrics = method.fit(model, context)
    assert metrics["original_accuracy"] == original  # eq. 8: A(theta_A), the model without bounds
    options = method.optimizer.value.options
    assert options.tolerance_reference == "original"
    if metrics["selected_epoch"] >= 0:
        assert metrics["accuracy"] >= original - options.tolerance
    assert "original model's accuracy (eq. 8" in method.notes_text()


def test_presets_are_named_for_whose_settings_they_are() -> None:
    assert set(fitact.FITACT_PRESETS) == {"fast", "toolbox-v1", "toolbox-v2"}
    registry = get_registries().optimizers
    for name in ("fitact-posttrain", "proact-progressive"):
        with pytest.raises(UsageError, match="toolbox-v1"):
            registry.build(name, {"preset": "v1"})
        assert registry.build(name, {"preset": "toolbox-v2"}).value.options.preset == "toolbox-v2"
    for name in ("fitact", "proact"):
        assert "toolbox" in _method(name).notes_text() and "published settings" not in _method(name).notes_text()


def test_clipact_scores_under_the_fault_model_of_its_option(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = get_registries().optimizers
    assert registry.build("ftclipact-search").value.options.fault_model == "bitflip"  # the paper's
    with pytest.raises(UsageError, match="unknown fault model 'bitflop'"):
        registry.build("ftclipact-search", {"fault_model": "bitflop"})
    used: list[str] = []

    def recording(name: str, *arguments: Any) -> Any:
        used.append(name)
        return resolve_fault_model(name, *arguments)

    monkeypatch.setattr(clipact, "resolve_fault_model", recording)
    context = _context()
    method = _method("clipact", {"optimizer": {"name": "ftclipact-search", "fault_model": "stuck-at-1", "draws": 1,
                                               "min_rounds": 1, "max_rounds": 1}})
    method.fit(method.build(_model(), context), context)
    assert used and set(used) == {"stuck-at-1"}
    assert "fault_model" in method.notes_text()


def test_ranger_clamps_after_pooling_and_flatten_by_default() -> None:
    model = _method("ranger").build(_model(), _context())
    assert sum(isinstance(module, FollowingClamp) for module in model.modules()) == 2
    plain = _method("ranger", {"activation": {"name": "clamp", "after": []}}).build(_model(), _context())
    assert not any(isinstance(module, FollowingClamp) for module in plain.modules())


def test_activation_faults_at_a_call_site_land_before_its_bound() -> None:
    context = _context()
    method = _method("ranger")
    model = method.build(_model(), context)
    method.fit(model, context)
    fault_model = resolve_fault_model("act-bitflip", {"operators": ["activation"]})
    injector = ActivationInjector(model, fault_model, context.validation[:2][0])
    sites = activation_call_sites(model)
    assert list(injector.layout.names) == [f"{site}.activation" for site in sites]
    assert all(module.bound.isfinite().all() for module in bounded_sites(model, sites).values())
