"""Random draws shared by the trace generators."""

from __future__ import annotations

import math
import random


def lognormal(rnd: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    """A log-normal draw with the given median, clipped to [lo, hi]."""
    return min(hi, max(lo, median * math.exp(rnd.gauss(0.0, sigma))))
