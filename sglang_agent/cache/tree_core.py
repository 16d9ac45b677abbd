"""AgentTreeCore: SGLang's Python TreeCore, creating AgentTreeNodes and keeping their agent
state across node splits. Registered as tree-core backend "agent" through SGLang's own
`register_tree_core_backend`."""

from __future__ import annotations

from sglang.srt.mem_cache.unified_cache import tree_core_registry
from sglang.srt.mem_cache.unified_cache.unified_tree_core import UnifiedTreeCore

from sglang_agent.cache.node import AgentTreeNode

TREE_CORE_NAME = "agent"


class AgentTreeCore(UnifiedTreeCore):
    def _new_node(self, priority: int = 0) -> AgentTreeNode:
        node = AgentTreeNode(self.component_types, priority=priority)
        self._register_node(node)
        return node

    def _split_node(self, key, child: AgentTreeNode, split_len: int):
        new_node, action = super()._split_node(key, child, split_len)
        new_node.inherit_agent_state(child)
        if self.on_split is not None:
            self.on_split(new_node, child)
        return new_node, action

    # Set by the owning cache: keeps its session -> nodes index complete across splits.
    on_split = None


def register() -> None:
    if tree_core_registry.get_tree_core_factory(TREE_CORE_NAME) is None:
        tree_core_registry.register_tree_core_backend(TREE_CORE_NAME, AgentTreeCore)
