"""Column keys of leaderboard tables: the one spelling of a BER in every table, every format.

A BER is written with as many significant digits as it needs (``1e-06``, ``2.5e-06``, ``9.99e-01``),
never rounded, so two BERs of a sweep never share a key and a key always reads back to its BER. Every
computed column of a BER is ``<name>@<key>`` (``acc@2.5e-06``), every displayed one ``<label> <key>``.
"""

from __future__ import annotations

import math

__all__ = ["ber_column", "format_ber"]


def format_ber(ber: float) -> str:
    """``1e-06`` style with as many digits as the value needs (``9.99e-01``, never a rounded ``1e+00``)."""
    for digits in range(7):
        text = f"{ber:.{digits}e}"
        if math.isclose(float(text), ber, rel_tol=1e-9, abs_tol=0.0):
            return text
    return f"{ber:.6e}"


def ber_column(name: str, ber: float) -> str:
    """The computed column ``name`` at ``ber``: ``acc@2.5e-06``."""
    return f"{name}@{format_ber(ber)}"
