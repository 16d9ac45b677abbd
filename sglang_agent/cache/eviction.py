"""Adapter from the pure eviction key to SGLang's EvictionStrategy interface."""

from __future__ import annotations

from typing import Callable

from sglang.srt.mem_cache.evict_policy import EvictionStrategy, LRUStrategy

from sglang_agent.cache.node import AgentTreeNode
from sglang_agent.policy import Clock
from sglang_agent.policy.eviction import eviction_key
from sglang_agent.policy.workflow import WorkflowPace


class AgentEvictionStrategy(EvictionStrategy):
    """Wraps the configured upstream strategy (LRU by default): with no pins and no workflow its
    order is upstream's."""

    def __init__(self, base: EvictionStrategy, clock: Clock, pace: WorkflowPace, lru_now: Callable[[], float]):
        self.base = base
        self.clock = clock
        self.pace = pace
        self.lru_now = lru_now
        self.base_is_lru = type(base) is LRUStrategy

    def get_priority(self, node: AgentTreeNode):
        steps = node.steps_to_execution if self.base_is_lru else None
        pace = self.pace.accesses_per_step if steps is not None else None
        return eviction_key(node.ttl_deadline, steps, self.base.get_priority(node), self.clock(),
                            self.lru_now() if pace is not None else None, pace, bool(node.critical_sessions))
