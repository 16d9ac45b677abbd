"""The critical-path reservation's state (TokenCake's spatial scheduler; the rules are pure, in
policy/reservation.py): which sessions and role prefixes are on a live workflow's critical path
(marked in the cache, so eviction takes them last), the reserved share, and what is held back from
other requests in the current admission round."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sglang_agent.controller.ports import SessionKV
from sglang_agent.policy.reservation import ReservationSizer, held_tokens

# Before any workflow turn was seen: what a critical agent's next turn is taken to need.
DEFAULT_TURN_TOKENS = 512
TURN_TOKENS_SMOOTHING = 0.2  # weight of the newest turn in the estimate


@dataclass(frozen=True)
class CriticalPath:
    """One workflow's critical path now: the cache keys to protect (its agents' sessions and role
    prefixes) and the sessions of its critical agents on the frontier (the ones that need memory
    next)."""

    keys: frozenset[str]
    next_sessions: frozenset[str] = frozenset()


class CriticalReservation:
    def __init__(self, kv: SessionKV, max_fraction: float):
        self.kv = kv
        self.sizer = ReservationSizer(max_fraction) if max_fraction > 0 else None
        self.paths: dict[str, CriticalPath] = {}  # workflow -> its critical path
        self.marks: dict[str, int] = {}  # cache key -> live workflows whose critical path holds it
        self.turn_tokens_estimate = float(DEFAULT_TURN_TOKENS)
        self.held = 0  # tokens held from other requests in the current admission round
        self.held_back_rids: set[str] = set()  # requests held back at least once, still in the scheduler
        self.requests_held_back = 0

    @property
    def enabled(self) -> bool:
        return self.sizer is not None

    # ---- the critical paths ----------------------------------------------------------------------
    def set_path(self, workflow_id: str, path: Optional[CriticalPath]) -> None:
        """A workflow's critical path moved (None: the workflow ended). Marks change only where a
        key enters or leaves every workflow's path."""
        old = self.paths.pop(workflow_id, None)
        if path is not None and path.keys:
            self.paths[workflow_id] = path
        old_keys = old.keys if old is not None else frozenset()
        new_keys = path.keys if path is not None else frozenset()
        for key in new_keys - old_keys:
            self.marks[key] = self.marks.get(key, 0) + 1
            if self.marks[key] == 1:
                self.kv.set_session_critical(key, True)
        for key in old_keys - new_keys:
            self.marks[key] -= 1
            if not self.marks[key]:
                del self.marks[key]
                self.kv.set_session_critical(key, False)

    def is_critical(self, session_id: Optional[str]) -> bool:
        return session_id is not None and session_id in self.marks

    # ---- memory ------------------------------------------------------------------------------
    def observe_step(self, kv_usage: float) -> None:
        if self.sizer is not None:
            self.sizer.observe_step(kv_usage)

    def observe_turn(self, new_tokens: int) -> None:
        """A workflow turn finished having needed `new_tokens` (uncached prompt + output)."""
        self.turn_tokens_estimate += TURN_TOKENS_SMOOTHING * (new_tokens - self.turn_tokens_estimate)

    def reserved_tokens(self) -> int:
        return self.sizer.reserved_tokens(self.kv.pool_tokens()) if self.sizer is not None else 0

    def begin_round(self, need_tokens: int) -> int:
        """An admission round starts; critical agents need `need_tokens` now. Returns what is held."""
        self.held = held_tokens(self.reserved_tokens(), need_tokens)
        return self.held

    def held_back(self, rid: str) -> None:
        if rid not in self.held_back_rids:
            self.held_back_rids.add(rid)
            self.requests_held_back += 1

    def request_left(self, rid: str) -> None:
        self.held_back_rids.discard(rid)

    def snapshot(self) -> dict:
        return {"reserve_fraction": self.sizer.fraction if self.sizer is not None else 0.0,
                "reserved_tokens": self.reserved_tokens(),
                "reserved_tokens_used": self.held,
                "requests_held_by_reservation": self.requests_held_back,
                "critical_workflows": len(self.paths),
                "critical_keys": len(self.marks)}

    def check_integrity(self) -> None:
        counts: dict[str, int] = {}
        for path in self.paths.values():
            for key in path.keys:
                counts[key] = counts.get(key, 0) + 1
        assert counts == self.marks, "critical marks out of step with the workflows' critical paths"
        assert 0 <= self.held <= max(self.reserved_tokens(), 0), self.held
