"""Temporal KV placement at a tool call (TokenCake, arXiv 2510.18586; KVFlow's prefetch), pure.

When a turn ends in a tool call, its KV can stay pinned on the GPU (Continuum's TTL), move to
host memory for the duration of the tool and come back just before the tool returns, or be
dropped. Offload wins when the tool is expected to run well past the time a reload takes (the
GPU memory is free for others meanwhile and the prefix still costs no recompute) and host
memory has room; otherwise the TTL decision stands. The reload is scheduled at the predicted
return minus the reload time; a tool_end that comes earlier triggers it at once.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from sglang_agent.policy.ttl import EvictionCost, TTLDecision

PIN, OFFLOAD, DROP = "pin", "offload", "drop"
# Offload only when the tool is expected to outlast the reload by this factor (copy out and
# back both cost PCIe time, and a prediction error on a short tool turns into a stall).
OFFLOAD_MIN_RATIO = 2.0


@dataclass(frozen=True)
class TemporalDecision:
    action: str  # pin | offload | drop
    ttl_s: float  # pin: GPU TTL; offload: how long the host copy is kept
    prefetch_after_s: Optional[float]  # offload: start the reload this long after tool_start
    reason: str


def predicted_return_s(durations_s: Sequence[float]) -> float:
    """The median duration: robust to the long tail that makes the mean overshoot."""
    return statistics.median(durations_s) if durations_s else 0.0


def decide_placement(
    durations_s: Sequence[float],
    cost: EvictionCost,
    ttl: TTLDecision,
    host_room: bool,
    max_ttl_s: float,
) -> TemporalDecision:
    expected = predicted_return_s(durations_s)
    reload = cost.reload_s
    if host_room and reload is not None and reload < cost.recompute_s and expected >= OFFLOAD_MIN_RATIO * reload:
        # Keep the host copy as long as a pin could have lasted, at least past the predicted return.
        keep = min(max_ttl_s, max(ttl.ttl_s, 2.0 * expected))
        return TemporalDecision(OFFLOAD, keep, max(0.0, expected - reload),
                                f"tool ~{expected:.2f} s outlasts a {reload:.3f} s reload")
    if ttl.ttl_s > 0:
        return TemporalDecision(PIN, ttl.ttl_s, None, ttl.reason)
    return TemporalDecision(DROP, 0.0, None, ttl.reason)
