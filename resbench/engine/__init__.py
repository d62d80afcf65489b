"""The fault engine: what turns a model and a fault into a trial.

* :mod:`~resbench.engine.formats`: number formats, how a stored tensor is laid out in bits;
  :mod:`~resbench.engine.quantization`: asymmetric unsigned m-bit formats (``uint8-asym``, ...);
  :mod:`~resbench.engine.stored_parameters`: quantization parameters per group, and their codes when stored;
* :mod:`~resbench.engine.faultspace`: which stored tensors faults may hit;
* :mod:`~resbench.engine.deployment`: deploying a model in a format, simulated or on real kernels
  (:mod:`~resbench.engine.torch_ao`: PyTorch's int8 post-training quantization);
* :mod:`~resbench.engine.faults`: fault models in stored weights; :mod:`~resbench.engine.bers`: the rule a
  BER sweep follows;
* :mod:`~resbench.engine.estimator`: the sampling designs (conditional on a flip) and their exact weights;
  :mod:`~resbench.engine.strata`: the critical-bit stratified design;
* :mod:`~resbench.engine.injection`: flipping and restoring stored bits in place;
* :mod:`~resbench.engine.activation_faults`, :mod:`~resbench.engine.activation_injection`: transient faults
  in operator outputs;
* :mod:`~resbench.engine.evaluation`: one pass over the evaluation set and the metrics of a trial;
  :mod:`~resbench.engine.prefix_reuse`: a faulty pass that recomputes only what its flips reach;
* :mod:`~resbench.engine.operations`: multiply-adds and elementwise operations per inference;
* :mod:`~resbench.engine.allocator`: freed tensor memory kept for reuse (glibc), so passes do not fault
  pages in again.

Plugins and benchmarks import the engine and :mod:`resbench.methods`, never :mod:`resbench.run`.
"""

from __future__ import annotations

__all__: list[str] = []
