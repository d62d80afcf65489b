"""Seeds derived from named parts, so any trial can be replayed alone.

Trial seeds derive from (base seed, model, dataset, format, fault model, trial index) and never from
the method: methods sharing a tensor see the same fault sites in it (common random numbers).
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the textual form of ``parts`` (BLAKE2b: stable across runs and machines)."""
    text = "\x1f".join(str(part) for part in parts)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
