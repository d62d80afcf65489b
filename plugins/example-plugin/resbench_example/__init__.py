"""resbench-example-plugin: an 8-bit float number format, ``fp8-e4m3``, registered through resbench's hooks.

This module is the plugin: ``pyproject.toml`` names it in the ``resbench`` entry point group, resbench
imports it and calls every hook implementation it finds here. Copy this package to write your own.
"""

from __future__ import annotations

from resbench.engine.formats import NumberFormat
from resbench.hookspecs import Register
from resbench.plugins import hookimpl

from resbench_example.fp8 import FP8E4M3, FP8E4M3Options

__all__ = ["FP8E4M3", "FP8E4M3Options", "register_formats"]


def make_fp8_e4m3(options: FP8E4M3Options) -> NumberFormat:
    """OCP FP8 E4M3 (8 bits: 1 sign, 4 exponent, 3 mantissa; max 448, no infinity)."""
    return FP8E4M3(saturate=options.saturate)


@hookimpl
def register_formats(register: Register) -> None:
    """Register ``fp8-e4m3``; ``resbench list formats`` then shows it with this plugin's name."""
    register("fp8-e4m3", make_fp8_e4m3, options=FP8E4M3Options)
