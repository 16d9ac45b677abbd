"""A modelled host-memory KV tier for the simulator (TokenCake-style offload during tool calls).

The offload copy is free to the GPU (it overlaps the tool call); the reload takes
bytes / host bandwidth from the moment the prefetch starts (predicted return minus reload
time, or at tool_end if the tool returns early). A resumed turn admitted before its reload is
done waits for the rest. A copy not used within its keep time is dropped (both tiers free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from eval.sim.cost_model import CostModel


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

    def _purge(self) -> None:
        now = self.clock()
        for session in [s for s, c in self.copies.items() if c.expires_at <= now]:
            del self.copies[session]

    def used_tokens(self) -> int:
        self._purge()
        return sum(c.tokens for c in self.copies.values())

    def reload_s(self, tokens: int) -> float:
        return self.cost.reload_s(tokens)

    def has_room(self, tokens: int) -> bool:
        return self.used_tokens() + tokens <= self.capacity_tokens

    def offload(self, session_id: str, tokens: int, keep_s: float, prefetch_after_s: float) -> None:
        now = self.clock()
        self.copies[session_id] = HostCopy(tokens, now + keep_s, now + prefetch_after_s)

    def prefetch_prefix(self, session_id: str) -> int:
        """KVFlow's next-agent prefetch is not modelled: the simulator's host tier holds only
        copies offloaded at tool calls (workflow prefixes are pinned, kept or recomputed)."""
        return 0

    def forget(self, session_id: str) -> None:
        self.copies.pop(session_id, None)

    def prefetch_now(self, session_id: str, turn_arrived: bool = False) -> None:
        copy = self.copies.get(session_id)
        if copy is not None:
            copy.prefetch_at = min(copy.prefetch_at, self.clock())

    def peek(self, session_id: str) -> Optional[HostCopy]:
        self._purge()
        return self.copies.get(session_id)

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
