"""Real quantized models: PyTorch's post-training quantization, and faults in the stored integer codes.

``int8`` with ``engine: torch-ao`` deploys a model as PyTorch itself would for inference on a CPU:

1. :func:`convert` quantizes the model with ``torch.ao``'s FX graph mode (``prepare_fx``, a calibration
   pass over a seeded sample of the training split, ``convert_fx``) for the chosen backend (``fbgemm`` on
   x86, ``qnnpack`` on ARM, ``x86``). Batch norms fold into the preceding convolutions, ReLUs fuse with
   them, activations are quantized with the backend's default observer (``quint8``). Weights are ``qint8``
   codes in [-127, 127] with ``s = max|w| / 127`` per tensor or per output channel: the observer of
   :class:`~resbench.engine.formats.Int8`, so the simulated and the real path store the same codes.
   Weight transforms (parametrizations) are folded first: the kernels compute with the stored codes, there
   is no read-back function between memory and the multiply-accumulate. Operators without a quantized
   kernel (a bounded activation's clamp) run on dequantized values and are quantized again after them.
2. :class:`QuantizedInjector` puts the ``int_repr()`` codes of every quantized convolution and linear
   layer on one element line (canonical name ``<module>.weight``, in module order), flips bits there
   and writes each touched weight back through its module's own setter (``set_weight_bias``, which
   repacks it for the backend); restore writes the clean codes back the same way, so the model is
   bit-identical afterwards. Biases stay float32 in PyTorch's quantized modules (the backend quantizes
   them on the fly) and are not in the fault space; neither are a method's bounds, which the converted
   graph keeps as float constants. With ``faultable_parameters`` the float32 scales join the element line
   as :mod:`resbench.engine.stored_parameters` lays them out.

The backend is process state (``torch.backends.quantized.engine``): :func:`convert` sets it, and a model is
evaluated with the backend it was converted for.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import fx, nn
from torch.ao.quantization import QConfig, get_default_qconfig, get_default_qconfig_mapping
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.nn.utils import parametrize

from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import Int8, NumberFormat
from resbench.engine.injection import Injector
from resbench.engine.stored_parameters import ParameterStore
from resbench.errors import UsageError

__all__ = ["QuantizedInjector", "check_backend", "convert", "quantized_layers"]

#: Messages torch.ao emits on every use (deprecation notices, observer advice), silenced where resbench calls it.
_NOTICES = r"(?is).*(torch\.ao\.quantization|quant_min and quant_max|quantized tensor creation|quantiz)"


@contextmanager
def _quiet() -> Iterator[None]:
    """Run torch.ao calls without their notices (pytest turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOTICES)
        yield


def check_backend(backend: str) -> None:
    """Refuse a quantized backend this build of PyTorch lacks (one line, before any work)."""
    supported = list(torch.backends.quantized.supported_engines)
    if backend not in supported:
        raise UsageError(f"int8 engine torch-ao: backend {backend!r} is not available in this PyTorch "
                         f"(available: {', '.join(name for name in supported if name != 'none')})")


def _qconfig(number_format: Int8) -> QConfig:
    """The backend's activation observer; weights as :class:`Int8` quantizes them (codes in [-127, 127])."""
    if number_format.granularity == "channel":
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                    quant_min=-127, quant_max=127)
    else:
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                          quant_min=-127, quant_max=127)
    return QConfig(activation=get_default_qconfig(number_format.backend).activation, weight=weight)


def _fold_parametrizations(model: nn.Module) -> None:
    """Store what each parametrized tensor reads back (a weight transform's ``tau(W)``), as the kernels see it."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(cast(nn.ModuleDict, module.parametrizations).keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def convert(model: nn.Module, number_format: Int8, calibration: torch.Tensor, batch_size: int = 256) -> fx.GraphModule:
    """``model`` (changed in place: transforms folded) quantized by torch.ao for ``number_format.backend``,
    its activation ranges calibrated on ``calibration`` images (module docstring)."""
    check_backend(number_format.backend)
    torch.backends.quantized.engine = number_format.backend
    _fold_parametrizations(model)
    model = model.cpu().eval()
    mapping = get_default_qconfig_mapping(number_format.backend).set_global(_qconfig(number_format))
    with _quiet(), torch.no_grad():
        prepared = prepare_fx(model, mapping, example_inputs=(calibration[:1].cpu(),))
        for start in range(0, calibration.shape[0], batch_size):
            prepared(calibration[start:start + batch_size].cpu())
        return convert_fx(prepared)


def quantized_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """The quantized convolutions and linear layers of a converted model (weights read with ``weight()``)."""
    found: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and hasattr(module, "set_weight_bias"):
            with _quiet():
                if weight().is_quantized:
                    found.append((name, module))
    return found


def _scales(weight: torch.Tensor) -> torch.Tensor:
    """The scale of each group of a quantized weight, as float32 (one row per output channel or one)."""
    if weight.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine):
        return weight.q_per_channel_scales().to(torch.float32).reshape(-1, 1)
    return torch.tensor([[weight.q_scale()]], dtype=torch.float32)


class QuantizedInjector(Injector):
    """The ``int_repr()`` codes of a converted model's quantized weights as a fault space (module docstring).

    :attr:`values` holds the dequantized weights (codes times scale), what the kernels compute with.
    """

    def __init__(self, model: nn.Module, number_format: NumberFormat) -> None:
        if not isinstance(number_format, Int8):
            raise UsageError(f"the torch-ao engine deploys int8 only, not {number_format.name}")
        self.model = model
        self.format = number_format
        self.device = torch.device("cpu")
        self._layers = quantized_layers(model)
        if not self._layers:
            raise UsageError(f"torch.ao quantized no convolution or linear layer of {type(model).__name__}")
        with _quiet():
            weights = [module.weight() for _, module in self._layers]
        self._biases = [module.bias() for _, module in self._layers]
        self._per_channel = [weight.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
                             for weight in weights]
        self._shapes = [weight.shape for weight in weights]
        names = tuple(f"{name}.weight" for name, _ in self._layers)
        self.stored_parameters = ParameterStore(names, self._shapes, number_format, self.device)
        base = FaultSpaceLayout(names, tuple(weight.numel() for weight in weights), 8, number_format.bit_fields())
        self.layout = self.stored_parameters.extend(base)
        self._ends = torch.tensor(base.offsets[1:], dtype=torch.int64)
        self.parameters = self.stored_parameters.parameters
        for index, weight in enumerate(weights):
            self.parameters[self.stored_parameters.starts[index]:self.stored_parameters.starts[index + 1]] = \
                _scales(weight)
        self.codes = torch.cat([weight.int_repr().reshape(-1) for weight in weights]
                               + [self.stored_parameters.codes()])
        self.values = torch.empty(self.stored_parameters.first_element, dtype=torch.float32)
        self._code_bits = 8
        self._originals = [weight for weight in weights]
        self._applied: tuple[torch.Tensor, torch.Tensor] | None = None
        self.effective_flips = 0
        for index in range(len(self._layers)):
            self._decode_tensor(index)  # float32 scales written back: what every later trial restores to
        self.clean_codes = self.codes.clone()

    def _decode_tensor(self, index: int) -> None:
        """Write tensor ``index`` back into its module from its codes and scales, and refresh :attr:`values`."""
        start, end = self.layout.offsets[index], self.layout.offsets[index + 1]
        groups = self.stored_parameters
        scales = self.parameters[groups.starts[index]:groups.starts[index + 1], 0]
        codes = self.codes[start:end].view(self._shapes[index])
        with _quiet():
            if self._per_channel[index]:
                weight = torch._make_per_channel_quantized_tensor(
                    codes, scales.to(torch.float64), torch.zeros(scales.numel(), dtype=torch.int64), 0)
            else:
                weight = torch._make_per_tensor_quantized_tensor(codes, float(scales[0]), 0)
            self._layers[index][1].set_weight_bias(weight, self._biases[index])
        self.values[start:end] = weight.dequantize().reshape(-1)

    def _write(self, elements: torch.Tensor, codes: torch.Tensor) -> None:
        self.codes.index_copy_(0, elements, codes)
        first_parameter = self.stored_parameters.first_element
        in_values = elements < first_parameter
        touched = set(torch.searchsorted(self._ends, elements[in_values], right=True).unique().tolist())
        if not bool(in_values.all()):
            touched |= set(self.stored_parameters.read(self.codes[first_parameter:],
                                                       elements[~in_values] - first_parameter))
        for index in sorted(touched):
            self._decode_tensor(index)

    def reset(self) -> None:
        """Return to the clean deployed state: every weight written back from the clean codes."""
        with torch.no_grad():
            self.codes.copy_(self.clean_codes)
            self.stored_parameters.read(self.codes[self.stored_parameters.first_element:])
            for index in range(len(self._layers)):
                self._decode_tensor(index)
        self._applied = None

    def undeploy(self) -> None:
        """A converted model has no float weights to give back."""
        raise UsageError("a torch-ao quantized model cannot be undeployed; convert the float model again")

    def weights(self) -> dict[str, torch.Tensor]:
        """The quantized weight of every layer in the fault space, as its module holds it now."""
        with _quiet():
            return {f"{name}.weight": module.weight() for name, module in self._layers}

    def describe(self) -> list[dict[str, object]]:
        """One entry per stored tensor (name, kind, shape), stored parameters included, and the deployment
        scheme (engine, backend, granularity, calibration images), for a result row."""
        entries: list[dict[str, object]] = [{"name": name, "kind": "model", "shape": list(shape)}
                                            for name, shape in zip(self.layout.names, self._shapes, strict=False)]
        assert isinstance(self.format, Int8)
        scheme: dict[str, object] = {"name": "deployment", "kind": "scheme", "shape": [],
                                     "scheme": self.format.scheme()}
        return [*entries, *self.stored_parameters.describe(), scheme]
