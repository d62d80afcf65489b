"""Activation faults in operators that are functions, not modules: the residual add of ResNet blocks and
of transformer blocks, reached through the traced graph."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import fx, nn

from resbench.engine.activation_faults import ActivationFaultModel
from resbench.engine.activation_injection import ActivationInjector
from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.faults import resolve_fault_model
from resbench.errors import UsageError
from resbench.models import build_model
from resbench.models.callsites import activation_call_sites, rewrite_activation_call_sites
from resbench.models.operators import expose_function_operators
from resbench.run.activation_campaign import faulty_logits


def _fault_model(**options: Any) -> ActivationFaultModel:
    made = resolve_fault_model("act-single", options)
    assert isinstance(made, ActivationFaultModel)
    return made


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", (3, 16, 16), 10, {}).eval()


def _data(count: int = 12) -> EvaluationData:
    generator = torch.Generator().manual_seed(1)
    return EvaluationData(torch.randn(count, 3, 16, 16, generator=generator), torch.zeros(count, dtype=torch.long), 6)


def test_activation_faults_reach_the_residual_adds() -> None:
    model, data = _resnet(), _data()
    injector = ActivationInjector(model, _fault_model(operators=("add",)), data.images)
    blocks = [f"layer{stage}.{block}.add" for stage in (1, 2, 3) for block in range(3)]
    assert injector.layout.names == tuple(blocks)
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}
    computed: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}

    def record(name: str, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        outputs[name].append(output.detach().clone())
        computed[name].append((inputs[0] + inputs[1]).detach())  # what the add computed before the fault

    clean = predict_logits(injector.model, data)
    handles = [injector.model.get_submodule(name).register_forward_hook(
        lambda _module, inputs, output, name=name: record(name, inputs, output)) for name in blocks]
    (faults,) = injector_faults(injector, data)
    faulty = faulty_logits(injector, data, faults, clean)
    for handle in handles:
        handle.remove()
    flipped_bits = 0
    for name in blocks:
        used, expected = torch.cat(outputs[name]), torch.cat(computed[name])
        differing = (used.view(torch.int32) ^ expected.view(torch.int32)).flatten()
        flipped_bits += sum(bin(int(value) & 0xFFFFFFFF).count("1") for value in differing[differing != 0])
    assert flipped_bits == data.size  # one bit per image, all in residual-add outputs
    assert not torch.equal(faulty, clean)
    injector.remove()


def injector_faults(injector: ActivationInjector, data: EvaluationData) -> Any:
    fault_model = _fault_model(operators=("add",), top_bits=2)
    return fault_model.sample_images(injector.layout, fault_model.cell_bers([1e-3]), 7, data.size)


def test_exposing_operators_keeps_outputs_and_leaves_the_model_alone() -> None:
    model, data = _resnet(), _data()
    rewritten = rewrite_activation_call_sites(model)
    before = rewritten.code
    exposed = expose_function_operators(rewritten)
    assert rewritten.code == before and isinstance(exposed, fx.GraphModule)
    assert torch.equal(predict_logits(exposed, data), predict_logits(model, data))
    assert activation_call_sites(exposed) == activation_call_sites(rewritten)
    assert exposed.get_parameter("conv1.weight") is rewritten.get_parameter("conv1.weight")


def test_transformer_residual_adds_are_operators_and_attention_internals_are_not() -> None:
    torch.manual_seed(0)
    model = build_model("vit-tiny", (1, 14, 14), 10, {"patch_size": 7, "dim": 16, "heads": 2, "mlp_dim": 32}).eval()
    images = torch.randn(2, 1, 14, 14)
    injector = ActivationInjector(model, _fault_model(operators=("add",)), images)
    assert injector.layout.names == ("add", "blocks.0.add", "blocks.0.add_1", "blocks.1.add", "blocks.1.add_1")
    with pytest.raises(UsageError, match="no operator of the model matches operators"):
        ActivationInjector(model, _fault_model(operators=("matmul",)), images)
