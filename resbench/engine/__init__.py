"""The fault engine: what turns a model and a fault into a trial.

* :mod:`~resbench.engine.formats`: number formats, how a stored tensor is laid out in bits;
  :mod:`~resbench.engine.quantization`: asymmetric unsigned m-bit formats (``uint8-asym``, ...);
  :mod:`~resbench.engine.stored_parameters`: quantization parameters per group, and their codes when stored;
* :mod:`~resbench.engine.faultspace`: which stored tensors faults may hit;
* :mod:`~resbench.engine.faults`: fault models in stored weights, and the BER checks every sweep passes;
* :mod:`~resbench.engine.estimator`: the sampling design (conditional on a flip) and its exact weights;
* :mod:`~resbench.engine.injection`: flipping and restoring stored bits in place;
* :mod:`~resbench.engine.activation_faults`, :mod:`~resbench.engine.activation_injection`: transient faults
  in operator outputs;
* :mod:`~resbench.engine.evaluation`: one pass over the evaluation set and the metrics of a trial.

Plugins and benchmarks import the engine and :mod:`resbench.methods`, never :mod:`resbench.run`.
"""

from __future__ import annotations

__all__: list[str] = []
