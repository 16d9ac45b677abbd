"""Temporal KV placement at a tool call (TokenCake, arXiv 2510.18586; KVFlow's prefetch), pure.

When a turn ends in a tool call, its KV can stay pinned on the GPU (Continuum's TTL), move to
host memory for the duration of the tool and come back just before the tool returns, or be
dropped. Offload wins when other requests need the GPU memory, the tool is expected to run well
past the time a reload takes (the memory is free for them meanwhile and the prefix still costs
no recompute) and host memory has room; otherwise the TTL decision stands. The reload is scheduled at the predicted
return minus the reload time; a tool_end that comes earlier triggers it at once.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional, Sequence

from sglang_agent.policy.ttl import EvictionCost, TTLDecision

PIN, OFFLOAD, DROP, KEEP = "pin", "offload", "drop", "keep"
REQUESTS_WAITING, POOL_ABOVE_WATERMARK = "requests_waiting", "pool_above_watermark"
# Offload only when the tool is expected to outlast the reload by this factor (copy out and
# back both cost PCIe time, and a prediction error on a short tool turns into a stall).
OFFLOAD_MIN_RATIO = 2.0


@dataclass
class HostEvents:
    """What a host tier's step produced for the controller."""

    lapsed: list[str] = field(default_factory=list)  # keep time ran out before the tool returned
    reloaded: dict[str, float] = field(default_factory=dict)  # session back on the GPU -> protect until


@dataclass(frozen=True)
class TemporalDecision:
    action: str  # pin | offload | drop
    ttl_s: float  # pin: GPU TTL; offload: how long the host copy is kept
    prefetch_after_s: Optional[float]  # offload: start the reload this long after tool_start
    reason: str


def memory_pressure(waiting_requests: int, free_tokens: int, pool_tokens: int, watermark: float) -> Optional[str]:
    """Why the GPU needs memory now, or None: requests wait for it, or the share of the pool that
    is neither free nor evictable is at the watermark."""
    if waiting_requests > 0:
        return REQUESTS_WAITING
    if pool_tokens > 0 and 1.0 - free_tokens / pool_tokens >= watermark:
        return POOL_ABOVE_WATERMARK
    return None


def predicted_return_s(durations_s: Sequence[float]) -> float:
    """The median duration: robust to the long tail that makes the mean overshoot."""
    return statistics.median(durations_s) if durations_s else 0.0


def decide_placement(
    durations_s: Sequence[float],
    cost: EvictionCost,
    ttl: TTLDecision,
    host_room: bool,
    max_host_keep_s: float,
    memory_pressure: Optional[str],
) -> TemporalDecision:
    """Where the KV of a session waits out its tool call.

    With a host tier whose reload is cheaper than recomputing: under memory pressure (requests
    waiting, or the pool above its watermark) and a tool that outlasts the reload, offload (TokenCake:
    free what the GPU needs, bring it back before the predicted return); without pressure, keep it
    as an ordinary cached prefix (SGLang's HiCache already holds its host copy, so an eviction
    costs only a reload: a hard pin would hold GPU memory to save that reload). Without a cheap
    reload path, the TTL decision stands (Continuum). The host copy is kept past the predicted
    return (twice it, at least the TTL), up to `max_host_keep_s`, not capped at the pin TTL."""
    expected = predicted_return_s(durations_s)
    reload = cost.reload_s
    cheap_reload = reload is not None and reload < cost.recompute_s
    if cheap_reload and memory_pressure and host_room and expected >= OFFLOAD_MIN_RATIO * reload:
        keep = min(max_host_keep_s, max(ttl.ttl_s, 2.0 * expected))
        return TemporalDecision(OFFLOAD, keep, max(0.0, expected - reload),
                                f"{memory_pressure}: tool ~{expected:.2f} s outlasts a {reload:.3f} s reload")
    if cheap_reload and not memory_pressure:
        return TemporalDecision(KEEP, 0.0, None,
                                f"no memory pressure: an eviction would cost a {reload:.3f} s reload from host")
    if ttl.ttl_s > 0:
        return TemporalDecision(PIN, ttl.ttl_s, None, ttl.reason)
    return TemporalDecision(DROP, 0.0, None, ttl.reason)
