"""resbench: benchmark how well neural networks survive faults in the memory that stores their weights."""

from __future__ import annotations

from resbench import moved

__version__ = "0.1.0"

__all__ = ["__version__"]

moved.install()
