"""The agent tree node: an upstream UnifiedTreeNode plus what the agent policies need."""

from __future__ import annotations

from typing import Optional

from sglang.srt.mem_cache.unified_cache.component_type import ComponentType
from sglang.srt.mem_cache.unified_cache.unified_tree_core import UnifiedTreeNode


class AgentTreeNode(UnifiedTreeNode):
    def __init__(self, tree_components: tuple[ComponentType, ...], priority: int = 0):
        super().__init__(tree_components, priority=priority)
        # Agent sessions whose cached turns run through this node.
        self.session_ids: set[str] = set()
        # session id -> pinned-until (clock seconds); a node is pinned while any is live.
        self.pin_deadlines: dict[str, float] = {}
        # KVFlow steps until some workflow needs this node again; None = unknown.
        self.steps_to_execution: Optional[int] = None

    @property
    def ttl_deadline(self) -> Optional[float]:
        return max(self.pin_deadlines.values()) if self.pin_deadlines else None

    @property
    def device_tokens(self) -> int:
        # The key and the device value have the same length (page size 1 or page-aligned keys).
        if self.parent is None or self.component_data[ComponentType.FULL].value is None:
            return 0
        return len(self.key)

    def inherit_agent_state(self, child: "AgentTreeNode") -> None:
        """A split puts this node above `child`: every path through the child runs through it."""
        self.session_ids = set(child.session_ids)
        self.pin_deadlines = dict(child.pin_deadlines)
        self.steps_to_execution = child.steps_to_execution
