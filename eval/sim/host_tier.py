"""A modelled host-memory KV tier for the simulator (TokenCake-style offload during tool calls),
the controller's `HostTier` there (the server's is SGLang's HiCache, sglang_agent/cache/host_tier.py).

The offload copy is free to the GPU (it overlaps the tool call); the reload takes
bytes / host bandwidth from the moment the prefetch starts (predicted return minus reload
time, or at tool_end if the tool returns early). A resumed turn admitted before its reload is
done waits for the rest. A copy not used within its keep time is dropped (both tiers free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from eval.sim.cost_model import CostModel
from sglang_agent.policy.temporal import HostEvents


@dataclass
class HostCopy:
    tokens: int
    expires_at: float
    prefetch_at: float


class SimHostTier:
    def __init__(self, capacity_tokens: int, cost: CostModel, clock: Callable[[], float]):
        self.capacity_tokens = capacity_tokens
        self.cost = cost
        self.clock = clock
        self.copies: dict[str, HostCopy] = {}
        self.reloaded_tokens = 0
        self.prefetch_hits = 0  # reload finished before the turn was admitted
        self.prefetch_misses = 0

    def used_tokens(self) -> int:
        return sum(c.tokens for c in self.copies.values())

    def reload_s(self, tokens: int) -> float:
        return self.cost.reload_s(tokens)

    def room_tokens(self) -> int:
        return self.capacity_tokens - self.used_tokens()

    def offload(self, session_id: str, tokens: int, prefetch_at: float, keep_until: float) -> None:
        self.copies[session_id] = HostCopy(tokens, keep_until, prefetch_at)

    def prefetch_prefix(self, session_id: str) -> int:
        """KVFlow's next-agent prefetch is not modelled: the simulator's host tier holds only
        copies offloaded at tool calls (workflow prefixes are pinned, kept or recomputed)."""
        return 0

    def forget(self, session_id: str) -> None:
        self.copies.pop(session_id, None)

    def has_job(self, session_id: str) -> bool:
        return session_id in self.copies

    def prefetch_now(self, session_id: str) -> None:
        copy = self.copies.get(session_id)
        if copy is not None:
            copy.prefetch_at = min(copy.prefetch_at, self.clock())

    def turn_arrived(self, session_id: str) -> None:
        """The turn came before the planned reload: the reload starts now (as the server's admission
        loads it at once); the copy stays until the admission takes it (`take`)."""
        self.prefetch_now(session_id)

    def poll(self, now: float, headroom_tokens: int) -> HostEvents:
        lapsed = [s for s, c in self.copies.items() if c.expires_at <= now]
        for session_id in lapsed:
            del self.copies[session_id]
        return HostEvents(lapsed=lapsed)

    def peek(self, session_id: str) -> Optional[HostCopy]:
        copy = self.copies.get(session_id)
        return copy if copy is not None and copy.expires_at > self.clock() else None

    def take(self, session_id: str, tokens: int) -> float:
        """Reload `tokens` of the session's copy for an admitted turn; returns the wait (s)."""
        copy = self.copies.pop(session_id)
        ready_at = copy.prefetch_at + self.reload_s(tokens)
        wait = max(0.0, ready_at - self.clock())
        self.reloaded_tokens += tokens
        if wait > 0:
            self.prefetch_misses += 1
        else:
            self.prefetch_hits += 1
        return wait

    def snapshot(self) -> dict:
        return {"host_tier": "simulated", "host_pool_tokens": self.capacity_tokens, "sessions_offloaded": len(self.copies),
                "reloaded_tokens": self.reloaded_tokens}
