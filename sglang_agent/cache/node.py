"""The agent tree node: an upstream UnifiedTreeNode plus what the agent policies need, kept so that
reading it is O(1) however many sessions share the node (the system prompt node of 100k sessions
costs the same as any other)."""

from __future__ import annotations

import heapq
from typing import Optional

from sglang.srt.mem_cache.unified_cache.component_type import ComponentType
from sglang.srt.mem_cache.unified_cache.unified_tree_core import UnifiedTreeNode


class AgentTreeNode(UnifiedTreeNode):
    def __init__(self, tree_components: tuple[ComponentType, ...], priority: int = 0):
        super().__init__(tree_components, priority=priority)
        # session id -> held-until (step-clock seconds) of its pin through this node, and a max-heap
        # of (-deadline, session) over them with stale entries dropped lazily (`ttl_deadline`).
        self.pin_deadlines: dict[str, float] = {}
        self._deadline_heap: list[tuple[float, str]] = []
        # Workflow sessions only: session id -> KVFlow steps until its agent runs again.
        self.step_sessions: dict[str, int] = {}
        self.step_counts: dict[int, int] = {}  # steps value -> sessions with it
        self.steps_to_execution: Optional[int] = None  # min of step_sessions (None: unknown)
        # Sessions (and role prefixes) of agents on a workflow's critical path whose path runs
        # through this node: while any, the node is evicted after every other unpinned node.
        self.critical_sessions: set[str] = set()
        # Implicit sessions waiting on a tool whose path runs through this node at or past the end
        # of their last prompt: session id -> the tokens a resuming prompt must match.
        self.resume_anchors: dict[str, int] = {}

    @property
    def device_tokens(self) -> int:
        # The key and the device value have the same length (page size 1 or page-aligned keys).
        if self.parent is None or self.component_data[ComponentType.FULL].value is None:
            return 0
        return len(self.key)

    @property
    def lock_ref(self) -> int:
        return self.component_data[ComponentType.FULL].lock_ref

    # ---- pins ----------------------------------------------------------------------------------
    @property
    def ttl_deadline(self) -> Optional[float]:
        """The latest pin through this node (None: no pin). O(log pins) amortized, however many."""
        heap = self._deadline_heap
        while heap and self.pin_deadlines.get(heap[0][1]) != -heap[0][0]:
            heapq.heappop(heap)
        return -heap[0][0] if heap else None

    def add_pin(self, session_id: str, deadline: float) -> None:
        self.pin_deadlines[session_id] = deadline
        heapq.heappush(self._deadline_heap, (-deadline, session_id))
        if len(self._deadline_heap) > 2 * len(self.pin_deadlines) + 8:  # bound the stale entries
            self._deadline_heap = [(-d, s) for s, d in self.pin_deadlines.items()]
            heapq.heapify(self._deadline_heap)

    def remove_pin(self, session_id: str) -> None:
        self.pin_deadlines.pop(session_id, None)
        if not self.pin_deadlines:
            self._deadline_heap.clear()

    # ---- steps ---------------------------------------------------------------------------------
    def set_steps(self, session_id: str, steps: Optional[int]) -> None:
        """Record (or with None, drop) one workflow session's steps. The minimum comes from a count
        per distinct value (few: at most a workflow's length), not from every session's entry."""
        old = self.step_sessions.pop(session_id, None)
        if old is not None:
            left = self.step_counts[old] - 1
            if left:
                self.step_counts[old] = left
            else:
                del self.step_counts[old]
        if steps is not None:
            self.step_sessions[session_id] = steps
            self.step_counts[steps] = self.step_counts.get(steps, 0) + 1
        self.steps_to_execution = min(self.step_counts) if self.step_counts else None

    def inherit_agent_state(self, child: "AgentTreeNode") -> None:
        """A split puts this node above `child`: every path through the child runs through it."""
        self.pin_deadlines = dict(child.pin_deadlines)
        self._deadline_heap = list(child._deadline_heap)
        self.step_sessions = dict(child.step_sessions)
        self.step_counts = dict(child.step_counts)
        self.steps_to_execution = child.steps_to_execution
        self.critical_sessions = set(child.critical_sessions)
        self.resume_anchors = dict(child.resume_anchors)
