"""Where a baseline saturates, defined operationally (the targets and the anchors use the same rule):
the lowest swept load at which its average JCT exceeds `factor` times its idle JCT, the average JCT
at the lowest swept load (chosen low enough that nothing queues there). Below it the baseline keeps
up; at it, queueing dominates. None when it never does within the sweep."""

from __future__ import annotations

from typing import Optional

SATURATION_FACTOR = 2.0


def saturation_rate(jct_by_rate: dict[float, float], factor: float = SATURATION_FACTOR) -> Optional[float]:
    rates = sorted(jct_by_rate)
    idle_s = jct_by_rate[rates[0]]
    return next((rate for rate in rates[1:] if jct_by_rate[rate] > factor * idle_s), None)
