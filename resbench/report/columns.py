"""What each leaderboard column means: one definition, shown on hover in the HTML page and listed in
``results/README.md`` (a test keeps the two in step)."""

from __future__ import annotations

__all__ = ["COLUMN_HELP", "column_help"]

COLUMN_HELP: dict[str, str] = {
    "method": "the resilience method (none is the unprotected model)",
    "rank": "position by score; methods whose paired score difference to the best of their group has a "
    "Bonferroni-corrected 95% interval containing 0 are statistically tied and share a rank marked =",
    "clean": "accuracy (%) on the test split after encoding the fault space in the number format, no fault "
    "(the BER-0 row)",
    "clean vs none": "clean accuracy minus the unprotected model's in the same table (points): what the method "
    "costs, or gains, without faults; in a short fixed-point format a weight transform also changes the "
    "resolution, so read gains under faults beside it",
    "BER x": "estimated mean accuracy (%) under faults at bit-error rate x [95% interval]; one trial = one fault "
    "pattern, injected, the test split evaluated once, the bits restored; trials given at least one flip are "
    "weighted exactly by the probability of none (see How a cell is estimated)",
    "score": "resilience score [95% interval]: accuracy normalized as (acc - chance) / (reference clean - "
    "chance), clipped to [0, 1], averaged over log10 BER across the reference range 1e-09..1e-01, linear between "
    "measured BERs; the table says which part of the range its sweep covers (nothing is extrapolated). The "
    "reference clean accuracy is the unprotected model's (none) of the same setup and seed, for every method "
    "(without none in the table: its best clean accuracy), so a method that costs clean accuracy pays for it "
    "and a weak model cannot win. 0 = no better than always predicting the most frequent test class, 1 = never "
    "below the reference clean accuracy; a broken model scores 0",
    "seed sd": "with several seeds: the standard deviation of the score between seeds, each seed training its "
    "own baseline and preparing its own methods (the BER and score intervals are fault-trial intervals given "
    "the trained models)",
    "tolerable BER": "the largest BER of the grid up to which the estimated mean accuracy stays within 1 point "
    "of the reference clean accuracy (as for the score), at that BER and every smaller one, counting only cells "
    "with at least 20 trials that flipped a bit; in brackets the same rule on the interval's lower bounds (the "
    "BER the intervals guarantee) and on its upper bounds (the largest they allow); <BER when the smallest BER "
    "already fails, \u2013 when it has too few trials with a flip to tell",
    "added values": "stored values the method adds to the fault space (bounds, thresholds): one per call site "
    "for layer-wise bounds, one per output element for neuron-wise bounds",
    "added bits %": "stored bits the method adds to the fault space, relative to the unprotected model's stored "
    "bits in the same format",
    "added ops": "operations the method adds per inference, counted on the executed program (deterministic): "
    "multiply-adds / elementwise operations (activations, bounds, weight read-backs), in thousands",
    "overhead %": "median over interleaved clean passes of the ratio protected / unprotected inference time, "
    "minus 1 [distribution-free 95% interval of the median], under the conditions the table's note gives "
    "(device, threads, batch, images); (wide) marks an interval wider than 20 points, too wide to read; timings "
    "vary between machines and runs",
    "prepare s": "time spent preparing the method: profiling, threshold search, post-training (0 for none)",
    "trials": "the number of trials behind each BER of the row (per seed), as a range when it differs between BERs "
    "or seeds (adaptive: a BER stops when its interval half-width is below the target or at the maximum)",
    "citation": "the paper the method comes from",
    "plugins": "the plugins that computed the row, with their versions (the method's and its parts'; the table's "
    "note names third-party plugins behind its model, dataset, format or fault model); rows computed by other "
    "versions are other cells, never pooled into this one",
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
