"""Continuum TTL policy (Li et al., arXiv 2511.02230): how long to pin a session's KV in GPU
memory when its turn ends in a tool call.

The paper pins the KV with a time-to-live chosen from (a) what eviction would cost the resumed
turn: re-prefill (or reload from host) of its prefix plus the queueing delay it would suffer
re-entering the waiting queue, and (b) the tool's duration distribution, so that the expected
benefit of keeping the KV exceeds the expected cost of the memory held (paper section on TTL
selection: utility = P(return <= tau) * saved delay - memory cost * E[min(D, tau)]).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

# Prior tool durations (seconds), used as pseudo-observations until a tool has history of its
# own. Continuum and InferCept report agent tool calls from milliseconds to tens of seconds;
# these quantile points span that range and fade as real observations accumulate.
DEFAULT_PRIOR_DURATIONS_S: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A client-declared duration is trusted, with this much slack for jitter.
DECLARED_DURATION_SLACK = 0.25


@dataclass(frozen=True)
class EvictionCost:
    """What losing the KV would cost the resumed turn, in seconds."""

    recompute_s: float  # prefill time of the prefix on this GPU
    reload_s: Optional[float]  # host -> GPU copy time; None when no host copy exists
    queue_delay_s: float  # extra wait to re-enter the batch after eviction

    @property
    def saved_s(self) -> float:
        """Delay a retained KV saves: the cheaper way back, plus the queueing it skips."""
        back = self.recompute_s if self.reload_s is None else min(self.recompute_s, self.reload_s)
        return back + self.queue_delay_s


@dataclass(frozen=True)
class TTLDecision:
    ttl_s: float  # 0 means "do not pin"
    expected_benefit_s: float
    expected_cost_s: float
    p_return_within_ttl: float
    reason: str


def memory_cost_rate(pool_fraction: float, waiting_requests: int, scale: float = 1.0) -> float:
    """Seconds of others' delay per second of holding `pool_fraction` of the KV pool.

    Memory held by a pin only hurts when requests wait for it; with nothing waiting it is free
    (Continuum: pins matter under load). Linear in both, scaled by `scale`.
    """
    return max(0.0, scale) * max(0.0, pool_fraction) * max(0, waiting_requests)


def choose_ttl(
    durations_s: Sequence[float],
    cost: EvictionCost,
    memory_cost_rate_s_per_s: float,
    max_ttl_s: float,
) -> TTLDecision:
    """Pick tau maximising P(D <= tau) * saved - rate * E[min(D, tau)] over the empirical
    durations; the smallest best tau wins ties. Returns ttl 0 when no tau has positive utility."""
    samples = sorted(d for d in durations_s if d >= 0)
    if not samples or max_ttl_s <= 0:
        return TTLDecision(0.0, 0.0, 0.0, 0.0, "no duration samples" if not samples else "ttl disabled")
    saved = cost.saved_s
    n = len(samples)
    best = TTLDecision(0.0, 0.0, 0.0, 0.0, "no positive utility")
    best_utility = 0.0
    prefix_sum = 0.0  # sum of samples <= tau
    candidates = [d for d in samples if d <= max_ttl_s]
    if not candidates or candidates[-1] < max_ttl_s:
        candidates.append(max_ttl_s)  # a cap below a sample still catches the fast returns
    i = 0
    for tau in candidates:
        while i < n and samples[i] <= tau:
            prefix_sum += samples[i]
            i += 1
        p_return = i / n
        expected_hold = (prefix_sum + (n - i) * tau) / n
        benefit = p_return * saved
        cost_s = memory_cost_rate_s_per_s * expected_hold
        utility = benefit - cost_s
        if utility > best_utility + 1e-12:
            best_utility = utility
            best = TTLDecision(tau, benefit, cost_s, p_return, "benefit exceeds memory cost")
    return best


@dataclass
class ToolDurationModel:
    """Online per-tool empirical duration distribution, seeded from a prior."""

    prior_s: tuple[float, ...] = DEFAULT_PRIOR_DURATIONS_S
    window: int = 256
    _observed: dict[str, deque] = field(default_factory=dict)

    max_tools: int = 1024  # distributions kept (least recently observed dropped): bounded state

    def observe(self, tool_name: str, duration_s: float) -> None:
        if duration_s < 0:
            raise ValueError(f"tool duration must be >= 0, got {duration_s}")
        observed = self._observed.pop(tool_name, None) or deque(maxlen=self.window)
        observed.append(duration_s)
        self._observed[tool_name] = observed  # most recent last
        while len(self._observed) > self.max_tools:
            del self._observed[next(iter(self._observed))]

    def samples(self, tool_name: str, declared_s: Optional[float] = None) -> list[float]:
        """Declared duration wins (with slack); else history plus prior pseudo-observations."""
        if declared_s is not None:
            return [declared_s * (1.0 + DECLARED_DURATION_SLACK)]
        return list(self._observed.get(tool_name, ())) + list(self.prior_s)

    def observed_count(self, tool_name: str) -> int:
        return len(self._observed.get(tool_name, ()))

    def summary(self, top: int = 20) -> dict[str, dict]:
        """The learned distribution of the most observed tools: count and median seconds."""
        ranked = sorted(self._observed.items(), key=lambda kv: -len(kv[1]))[:top]
        return {name: {"observed": len(d), "median_s": statistics.median(d)} for name, d in ranked if d}
