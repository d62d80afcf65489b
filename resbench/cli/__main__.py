"""``python -m resbench.cli``."""

from __future__ import annotations

import sys

from resbench.cli import main

sys.exit(main())
