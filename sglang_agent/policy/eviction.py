"""Eviction order of the agent radix cache (pure).

SGLang's eviction walk pops the smallest key first. Our key, in order:
1. unexpired TTL pins last (Continuum); among pins, the one closest to expiry goes first, so a
   request that cannot be admitted otherwise takes the pins that would lapse soonest;
2. every other node in upstream's order (LRU by default: SGLang's `last_access_time`, a logical
   clock that counts tree accesses). Under LRU a node's age stands for how far off its next use
   is; for a node a declared workflow needs again (KVFlow, arXiv 2507.07400: steps-to-execution)
   the schedule says it, so it ranks like a node last used `steps x accesses per step` ago on the
   same clock. The next agent's prefix (steps 0 or 1) then outranks other tenants' recent nodes,
   one needed 50 steps from now goes before them, and nodes no workflow knows keep their LRU
   place (before, "unknown" counted as furthest: every other tenant's prefix was evicted before
   any workflow node as soon as one workflow existed).
   Until the pace (tree accesses per workflow step) has been observed, or under a non-LRU base
   policy, workflow nodes rank by the base key like every other node.
"""

from __future__ import annotations

from typing import Any, Optional

UNPINNED_TIER = 0
PINNED_TIER = 1


def is_pin_live(ttl_deadline: Optional[float], now: float) -> bool:
    return ttl_deadline is not None and ttl_deadline > now


def eviction_key(
    ttl_deadline: Optional[float],
    steps_to_execution: Optional[int],
    base_priority: Any,
    now: float,
    lru_now: Optional[float] = None,
    accesses_per_step: Optional[float] = None,
) -> tuple:
    if is_pin_live(ttl_deadline, now):
        return (PINNED_TIER, ttl_deadline, base_priority)
    if (steps_to_execution is None or accesses_per_step is None or lru_now is None
            or not isinstance(base_priority, (int, float))):
        return (UNPINNED_TIER, base_priority)
    # Needed in k steps = as valuable as a node that will be "touched" k steps from now.
    return (UNPINNED_TIER, lru_now - steps_to_execution * accesses_per_step)
