"""Adapter from the pure eviction key to SGLang's EvictionStrategy interface."""

from __future__ import annotations

from sglang.srt.mem_cache.evict_policy import EvictionStrategy

from sglang_agent.cache.node import AgentTreeNode
from sglang_agent.policy import Clock
from sglang_agent.policy.eviction import eviction_key


class AgentEvictionStrategy(EvictionStrategy):
    """Wraps the configured upstream strategy (LRU by default) as the last tie-breaker."""

    def __init__(self, base: EvictionStrategy, clock: Clock):
        self.base = base
        self.clock = clock

    def get_priority(self, node: AgentTreeNode):
        return eviction_key(
            node.ttl_deadline, node.steps_to_execution, self.base.get_priority(node), self.clock()
        )
