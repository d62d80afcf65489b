"""What each leaderboard column means: one definition, shown on hover in the HTML page and listed in
``results/README.md`` (a test keeps the two in step)."""

from __future__ import annotations

__all__ = ["COLUMN_HELP", "column_help"]

COLUMN_HELP: dict[str, str] = {
    "method": "the resilience method (none is the unprotected model)",
    "clean": "accuracy (%) on the test split after encoding the fault space in the number format, no fault "
    "(the BER-0 row)",
    "BER x": "mean accuracy (%) over the trials at bit-error rate x, ± the half-width of its 95% confidence "
    "interval; one trial = one fault pattern sampled over all stored bits, injected, the test split evaluated "
    "once, the bits restored",
    "AUC": "resilience AUC: the area under mean accuracy over log10(BER) across the BER grid (trapezoid rule), "
    "divided by the clean accuracy and by the grid's width in decades; 1.0 means no loss anywhere on the grid, "
    "higher is better",
    "tolerable BER": "the largest BER of the grid at which the mean accuracy, and that at every smaller BER, "
    "stays within 1 point of clean accuracy; \u2013 when even the smallest BER loses more",
    "added values": "stored values the method adds to the fault space (bounds, thresholds): one per call site "
    "for layer-wise bounds, one per output element for neuron-wise bounds",
    "added bits %": "stored bits the method adds to the fault space, relative to the unprotected model's stored "
    "bits in the same format",
    "overhead %": "clean inference time of the protected model relative to the unprotected one (fastest of "
    "alternating timed passes over the test split; timings vary between machines and runs)",
    "prepare s": "time spent preparing the method: profiling, threshold search, post-training (0 for none)",
    "trials": "the number of trials behind each BER of the row, as a range when it differs between BERs",
    "citation": "the paper the method comes from",
    "accuracy %": "faults in activations, one per inference: accuracy in % of inferences (trials x test images), "
    "with its 95% Wilson interval",
    "SDC %": "faults in activations, one per inference: silent data corruptions (top-1 differs from the "
    "fault-free prediction, logits finite) in % of inferences, with its 95% Wilson interval",
    "critical SDC %": "as SDC %, counting only inferences the fault-free model got right and the faulty one wrong",
    "DUE %": "inferences whose logits hold NaN or Inf (detected unrecoverable errors, counted as wrong), in %, "
    "with its 95% Wilson interval",
    "x fewer SDCs than none": "the unprotected model's SDC rate over the method's, with a 95% Katz log interval "
    "(conservative: both see the same faults)",
    "inferences": "faulty inferences behind the rates: trials x test images, each with its own fault",
    "acc x": "faults in activations at bit-error rate x (each output bit of each image): mean accuracy (%) over "
    "the trials, ± the half-width of its 95% confidence interval",
    "SDC % x": "faults in activations at bit-error rate x: silent data corruptions in % of inferences, with its "
    "95% Wilson interval",
    "DUE % x": "faults in activations at bit-error rate x: inferences whose logits hold NaN or Inf, in %, with its "
    "95% Wilson interval",
}


def column_help(column: str) -> str:
    """The definition of a displayed column (``BER 1e-05`` is explained by ``BER x``)."""
    if column in COLUMN_HELP:
        return COLUMN_HELP[column]
    for prefix in ("BER ", "acc ", "SDC % ", "DUE % "):
        if column.startswith(prefix):
            return COLUMN_HELP[f"{prefix}x"].replace("rate x", f"rate {column[len(prefix):]}")
    return "see results/README.md"
