"""Do the simulated int8 and PyTorch's real quantized kernels agree on a trained model?

Trains (or loads from the artifact cache) LeNet-5 on the embedded MNIST subset as ``resbench run`` does,
then deploys it in fp32, in simulated int8 (per tensor and per channel) and as a torch.ao model (fbgemm,
activations calibrated on 256 training images), and prints, on ``--test-limit`` test images:

* the clean accuracy of each deployment and how many of its predictions equal fp32's;
* how many predictions the simulated and the real int8 of one granularity share;
* how many weight codes differ between them (torch.ao rounds ``x * (1/s)``, the simulation ``x / s``: only
  exact ties can land one code apart).

Usage: ``python benchmarks/deployed_agreement.py [--test-limit 500]``.
"""

from __future__ import annotations

import argparse
import copy
from typing import Literal

import torch
from torch import nn

from resbench.cache import ArtifactCache
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.deployment import deploy_model
from resbench.engine.evaluation import EvaluationData, load_evaluation_data, predict_logits, predictions_of
from resbench.engine.formats import Int8
from resbench.engine.injection import Injector
from resbench.engine.torch_ao import QuantizedInjector
from resbench.training import load_or_train_baseline

DEPLOYMENTS: dict[str, Int8 | None] = {
    "fp32": None,
    "int8 tensor (simulated)": Int8("tensor"),
    "int8 channel (simulated)": Int8("channel"),
    "int8 tensor (torch-ao)": Int8("tensor", engine="torch-ao"),
    "int8 channel (torch-ao)": Int8("channel", engine="torch-ao"),
}


def _predictions(model: nn.Module, splits: DatasetSplits, data: EvaluationData) -> dict[str, torch.Tensor]:
    found = {}
    for label, number_format in DEPLOYMENTS.items():
        deployed = copy.deepcopy(model)
        if number_format is not None:
            deployed, _ = deploy_model(deployed, number_format, calibration=splits.profiling, seed=0)
        found[label] = predictions_of(predict_logits(deployed, data))[0]
    return found


def _codes_apart(model: nn.Module, splits: DatasetSplits, granularity: Literal["tensor", "channel"]
                 ) -> tuple[int, int]:
    """Weight codes that differ between the simulated and the torch.ao int8 of ``granularity``, and the total."""
    _, real = deploy_model(copy.deepcopy(model), Int8(granularity, engine="torch-ao"), calibration=splits.profiling,
                           seed=0)
    assert isinstance(real, QuantizedInjector)
    simulated = Injector.deploy(copy.deepcopy(model), Int8(granularity))
    apart = total = 0
    for name, weight in real.weights().items():
        index = simulated.layout.names.index(name)
        codes = simulated.codes[simulated.layout.offsets[index]:simulated.layout.offsets[index + 1]]
        apart += int((codes != weight.int_repr().reshape(-1)).sum())
        total += codes.numel()
    return apart, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-limit", type=int, default=500, help="test images to evaluate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_dataset("mnist5k", {"test_limit": args.test_limit})
    model = load_or_train_baseline("lenet5", {}, splits, seed=0, cache=ArtifactCache(), device="cpu",
                                   progress=False).model.eval()
    data = load_evaluation_data(splits.test, torch.device("cpu"), 500)
    predictions = _predictions(model, splits, data)
    for label, found in predictions.items():
        accuracy = 100 * float((found == data.labels).float().mean())
        same = 100 * float((found == predictions["fp32"]).float().mean())
        print(f"{label:26s} accuracy {accuracy:5.1f}%   same prediction as fp32 {same:5.1f}%")
    granularities: tuple[Literal["tensor", "channel"], ...] = ("tensor", "channel")
    for granularity in granularities:
        simulated, real = predictions[f"int8 {granularity} (simulated)"], predictions[f"int8 {granularity} (torch-ao)"]
        shared = 100 * float((simulated == real).float().mean())
        apart, total = _codes_apart(model, splits, granularity)
        print(f"int8 {granularity}: simulated and torch-ao share {shared:.1f}% of predictions; {apart} of {total} "
              "weight codes differ")


if __name__ == "__main__":
    main()
