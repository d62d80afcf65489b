"""Seeds derived from named parts, so any trial can be replayed alone.

Trial seeds derive from (base seed, model, dataset, format, fault model, trial index) and never from
the method: methods sharing a tensor see the same fault sites in it (common random numbers).
Seeds of faults drawn while a method trains (:func:`training_seed`) lie in another range, so a training
draw never replays an evaluation trial.
"""

from __future__ import annotations

import hashlib

__all__ = ["TRAINING_SEED_OFFSET", "derive_seed", "training_seed"]

#: Training seeds are ``TRAINING_SEED_OFFSET + derive_seed(...)``: at or above 2**63, where no trial seed lies.
TRAINING_SEED_OFFSET = 2**63


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the textual form of ``parts`` (BLAKE2b: stable across runs and machines)."""
    text = "\x1f".join(str(part) for part in parts)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def training_seed(*parts: object) -> int:
    """A seed for faults drawn while a method trains (random bit-error training): in [2**63, 2**64),
    disjoint from every :func:`derive_seed` value and so from every evaluation trial's seed."""
    return TRAINING_SEED_OFFSET + derive_seed(*parts)
