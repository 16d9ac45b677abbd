"""Pin budget (pure): pinned tokens are capped at a fraction of the KV pool, and a new pin that
would exceed the cap first displaces the pins closest to expiry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class PinHolding:
    session_id: str
    ttl_deadline: float
    exclusive_tokens: int  # tokens that only this pin keeps pinned


@dataclass(frozen=True)
class PinBudgetDecision:
    admit: bool
    release: tuple[str, ...]  # sessions whose pins are dropped to make room
    reason: str


def plan_pin(
    new_tokens: int,
    pinned_tokens: int,
    cap_tokens: int,
    holdings: Iterable[PinHolding],
    new_deadline: float,
) -> PinBudgetDecision:
    """Admit a pin of `new_tokens` (beyond those already pinned) under `cap_tokens`.

    Only pins expiring before the new one may be displaced: a pin never pushes out one that
    would outlive it. `holdings` are read soonest expiry first and only as far as needed (an
    iterator is never consumed when the pin fits)."""
    if new_tokens > cap_tokens:
        return PinBudgetDecision(False, (), f"prefix of {new_tokens} tokens exceeds the pin cap of {cap_tokens}")
    over = pinned_tokens + new_tokens - cap_tokens
    if over <= 0:
        return PinBudgetDecision(True, (), "within cap")
    released: list[str] = []
    for holding in sorted(holdings, key=lambda h: h.ttl_deadline) if isinstance(holdings, (list, tuple)) else holdings:
        if over <= 0 or holding.ttl_deadline >= new_deadline:
            break
        released.append(holding.session_id)
        over -= holding.exclusive_tokens
    if over > 0:
        return PinBudgetDecision(False, (), "pin cap reached by pins that outlive this one")
    return PinBudgetDecision(True, tuple(released), f"displaced {len(released)} pin(s) closer to expiry")
