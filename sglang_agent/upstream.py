"""Every use of a private (underscored) SGLang name, in one place, for sglang==0.5.23 only.

The rest of the package talks to SGLang through its public API; what it cannot do that way is a
function here, named for what it does, so a port to another SGLang release starts and ends in
this file (`tests/test_layers.py` fails when an underscored upstream name appears anywhere else).
The hooks in patches/ name their targets as strings and reach upstream objects through here too.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from sglang_agent.version import check_sglang_version

check_sglang_version()

from sglang.srt.mem_cache.unified_cache import tree_core_registry  # noqa: E402
from sglang.srt.mem_cache.unified_cache.components import base as _components_base  # noqa: E402
from sglang.srt.mem_cache.unified_cache.unified_tree_core import UnifiedTreeCore  # noqa: E402


# ---- the tree core ---------------------------------------------------------------------------------
class HookedTreeCore(UnifiedTreeCore):
    """SGLang's Python TreeCore making nodes of `node_class` and reporting every node split, so the
    agent cache keeps its per-node state (pins, steps) on both halves. Registered as a tree-core
    backend through SGLang's own registry."""

    node_class: type = None  # set by register_tree_core
    on_split: Optional[Callable[[Any, Any], None]] = None  # (new parent, child); set per instance

    def _new_node(self, priority: int = 0):
        node = self.node_class(self.component_types, priority=priority)
        self._register_node(node)
        return node

    def _split_node(self, key, child, split_len: int):
        new_node, action = super()._split_node(key, child, split_len)
        new_node.inherit_agent_state(child)
        if self.on_split is not None:
            self.on_split(new_node, child)
        return new_node, action


def register_tree_core(name: str, node_class: type) -> None:
    if tree_core_registry.get_tree_core_factory(name) is None:
        core = type("AgentTreeCore", (HookedTreeCore,), {"node_class": node_class})
        tree_core_registry.register_tree_core_backend(name, core)


def live_node(tree_core, node_id) -> Any:
    """The node with this id if the tree still has it, else None (eviction deletes nodes)."""
    return tree_core._node_arena.get(node_id) if node_id is not None else None


def all_nodes(tree_core):
    return tree_core._node_arena.values()


def is_device_leaf(tree_core, node) -> bool:
    """Unlocked, on the GPU, no child on the GPU: what may be demoted to host now."""
    return tree_core._is_device_leaf(node)


def lru_counter() -> float:
    """The logical clock SGLang stamps `last_access_time` with (it counts tree accesses; the same
    on every TP rank, and in the simulator)."""
    return _components_base._LAST_ACCESS_TIME_COUNTER_FLOAT


# ---- HiCache ---------------------------------------------------------------------------------------
def demote(cache, node_id, tracker: dict) -> None:
    """Free a node's GPU slots, keeping its host copy in the tree (node becomes host-only)."""
    cache._demote(node_id, tracker)


def write_host_copy(cache, node_id) -> None:
    """Queue the host copy of a node (and its unbacked ancestors) that write-through has not made."""
    cache._execute_and_commit_kv_backup(cache.tree_core.build_backup_kv_action(node_id))


# ---- the scheduler ---------------------------------------------------------------------------------
def add_scheduler_handler(scheduler, message_type: type, handler: Callable) -> None:
    from sglang.utils import TypeBasedDispatcher

    scheduler._request_dispatcher += TypeBasedDispatcher([(message_type, handler)])


def add_tokenizer_result_handler(tokenizer_manager, message_type: type, handler: Callable) -> None:
    from sglang.utils import TypeBasedDispatcher

    tokenizer_manager._result_dispatcher += TypeBasedDispatcher([(message_type, handler)])


def send_to_scheduler(tokenizer_manager, obj) -> None:
    """The socket requests take: a hint sent here reaches the scheduler before a request sent after."""
    tokenizer_manager._dispatch_to_scheduler(obj)


def add_dp_controller_handler(dp_controller, message_type: type, handler: Callable) -> None:
    from sglang.utils import TypeBasedDispatcher

    dp_controller._request_dispatcher += TypeBasedDispatcher([(message_type, handler)])


def dp_workers(dp_controller) -> list:
    return dp_controller.workers


def dp_broadcast(dp_controller, obj) -> None:
    dp_controller.send_control_message(obj)
