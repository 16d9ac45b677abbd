"""Eviction order of the agent radix cache (pure).

SGLang's eviction walk pops the smallest key first. Our key, in order:
1. unexpired TTL pins last (Continuum); among pins, the one closest to expiry goes first, so a
   request that cannot be admitted otherwise takes the pins that would lapse soonest;
2. among unpinned nodes, larger steps-to-execution first (KVFlow, arXiv 2507.07400): the node
   needed furthest in the future goes first; "unknown" counts as furthest, since no declared
   workflow needs it;
3. then the upstream strategy's own key (LRU by default), so with no hints the order is
   exactly upstream SGLang's.
"""

from __future__ import annotations

import math
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
) -> tuple:
    if is_pin_live(ttl_deadline, now):
        return (PINNED_TIER, ttl_deadline, base_priority)
    steps = math.inf if steps_to_execution is None else steps_to_execution
    return (UNPINNED_TIER, -steps, base_priority)
