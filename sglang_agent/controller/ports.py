"""What the controller needs from the rest of the system, as protocols it owns: the KV cache
(`SessionKV`: AgentRadixCache in the server and the simulator), a host tier (`HostTier`: SGLang's
HiCache in the server, a model of it in the simulator), and the scheduler's load (`LoadSnapshot`).
The controller imports none of their implementations; backend.py wires them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

from sglang_agent.policy.pins import PinHolding
from sglang_agent.policy.temporal import HostEvents


@dataclass(frozen=True)
class LoadSnapshot:
    """The scheduler's queue and running batch when a decision is priced."""

    waiting_requests: int = 0
    waiting_tokens: int = 0
    # KV the running requests may still need before they finish (their remaining output, as
    # SGLang clips it, plus a chunked prefill's remaining prompt): a pin or a reload may only take
    # memory beyond this, so it can never be what makes a running request fail.
    decode_reserve_tokens: int = 0


LoadProbe = Callable[[], LoadSnapshot]


class SessionKV(Protocol):
    """A session's KV in the radix tree: its latest turn's path, pins on it, workflow steps."""

    def pool_tokens(self) -> int: ...
    def free_tokens(self) -> int: ...  # free + evictable device tokens right now
    def record_turn(self, session_id: str, node_handle) -> None: ...
    def path_tokens(self, session_id: str) -> int: ...  # device tokens of the latest turn's path
    def unpinned_path_tokens(self, session_id: str) -> int: ...  # what a pin adds to the pinned total
    def protectable_tokens(self, session_id: str) -> int: ...  # what a pin takes out of the evictable pool
    def pin(self, session_id: str, ttl_deadline: float) -> int: ...
    def set_pin_deadline(self, session_id: str, ttl_deadline: float) -> None: ...
    def unpin(self, session_id: str) -> None: ...
    def pin_deadline(self, session_id: str) -> Optional[float]: ...
    def pinned_tokens(self) -> int: ...
    def pin_count(self) -> int: ...
    def pin_holdings(self) -> list[PinHolding]: ...
    def pins_soonest_first(self) -> Iterator[PinHolding]: ...  # lazily, in order of expiry
    def expire_pins(self, now: float) -> list[str]: ...  # drop lapsed pins; returns their sessions
    def set_session_steps(self, steps: dict[str, Optional[int]]) -> int: ...
    def set_session_critical(self, session_id: str, critical: bool) -> int: ...  # evicted last while marked
    def forget_session(self, session_id: str) -> None: ...
    def access_clock(self) -> float: ...  # the tree's logical LRU clock (counts accesses)
    def last_node(self, session_id: str): ...  # the node the session's latest turn ended on
    def common_prefix_node(self, session_a: str, session_b: str): ...  # deepest node on both paths
    # Implicit sessions: a prompt matching `tokens` of the session's path resumes it.
    def mark_resume_anchor(self, session_id: str, tokens: int) -> bool: ...
    def unmark_resume_anchor(self, session_id: str) -> None: ...
    def resume_anchor_count(self) -> int: ...
    def session_on_prefix(self, prompt) -> Optional[str]: ...  # token ids, or the request as received


class HostTier(Protocol):
    """Where an idle session's KV can wait during a long tool call (TokenCake)."""

    def reload_s(self, tokens: int) -> float: ...
    def room_tokens(self) -> int: ...
    # Move the session's path to host now; reload from `prefetch_at`; let go at `keep_until`.
    def offload(self, session_id: str, tokens: int, prefetch_at: float, keep_until: float) -> None: ...
    def prefetch_now(self, session_id: str) -> None: ...  # the tool returned early: reload at once
    def turn_arrived(self, session_id: str) -> None: ...  # the resumed turn is here: the job ends
    def prefetch_prefix(self, session_id: str) -> int: ...  # KVFlow: an agent due next; tokens queued
    def forget(self, session_id: str) -> None: ...
    def has_job(self, session_id: str) -> bool: ...
    # Once per step: run due copies within `headroom_tokens` of GPU memory.
    def poll(self, now: float, headroom_tokens: int) -> HostEvents: ...
    def snapshot(self) -> dict: ...
