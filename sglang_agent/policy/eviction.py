"""Eviction order of the agent radix cache (pure).

SGLang's eviction walk pops the smallest key first. Our key, in order:
1. unexpired TTL pins last (Continuum); among pins, the one closest to expiry goes first, so a
   request that cannot be admitted otherwise takes the pins that would lapse soonest;
2. nodes on the path of an agent on a workflow's critical path due within the horizon (reservation,
   policy/reservation.py; TokenCake: reserved agents' prefixes go last), ranked among themselves
   as below;
3. every other node in upstream's order (LRU by default: SGLang's `last_access_time`, a logical
   clock that counts tree accesses). Under LRU a node's age stands for how far off its next use
   is; for a node a declared workflow needs again (KVFlow, arXiv 2507.07400: steps-to-execution)
   the schedule says it, so it ranks like a node last used `steps x accesses per step` ago on the
   same clock, counted from a horizon of 3 steps (CacheSage's): the prefixes of the agents that run
   within the next 3 steps outrank every LRU node, the soonest last (a long tool call inside a
   running agent would otherwise let other tenants' one-off prompts push them out), one needed
   50 steps from now goes before other tenants' recent nodes, and nodes no workflow knows keep their LRU
   place (before, "unknown" counted as furthest: every other tenant's prefix was evicted before
   any workflow node as soon as one workflow existed).
   Until the pace (tree accesses per workflow step) has been observed, or under a non-LRU base
   policy, workflow nodes rank by the base key like every other node.
"""

from __future__ import annotations

from typing import Any, Optional

UNPINNED_TIER = 0
CRITICAL_TIER = 0.5
PINNED_TIER = 1
# Steps ahead within which a workflow's prefixes outrank every LRU node: CacheSage (arXiv
# 2605.27744) predicts 3 steps ahead and scores a block's survival = P(its agent fires within
# them) above any age term.
HORIZON_STEPS = 3


def is_pin_live(ttl_deadline: Optional[float], now: float) -> bool:
    return ttl_deadline is not None and ttl_deadline > now


def eviction_key(
    ttl_deadline: Optional[float],
    steps_to_execution: Optional[int],
    base_priority: Any,
    now: float,
    lru_now: Optional[float] = None,
    accesses_per_step: Optional[float] = None,
    critical: bool = False,
) -> tuple:
    if is_pin_live(ttl_deadline, now):
        return (PINNED_TIER, ttl_deadline, base_priority)
    return (CRITICAL_TIER if critical else UNPINNED_TIER,
            _unpinned_rank(steps_to_execution, base_priority, lru_now, accesses_per_step))


def _unpinned_rank(steps_to_execution: Optional[int], base_priority: Any, lru_now: Optional[float],
                   accesses_per_step: Optional[float]) -> Any:
    if (steps_to_execution is None or accesses_per_step is None or lru_now is None
            or not isinstance(base_priority, (int, float))):
        return base_priority
    # Needed within the next few steps (CacheSage's horizon): kept over every LRU node, the
    # soonest last. A tool call inside a running agent can take many steps' worth of other
    # tenants' accesses, and their one-off prompts, newer by then, would push out the prefixes
    # that are about to be used. Further off: like a node used (k - horizon) steps ago.
    if steps_to_execution <= HORIZON_STEPS:
        return lru_now + (HORIZON_STEPS - steps_to_execution) * 1e-3
    return lru_now - (steps_to_execution - HORIZON_STEPS) * accesses_per_step
