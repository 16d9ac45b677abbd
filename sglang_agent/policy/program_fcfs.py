"""Program-level FCFS (Continuum; Autellix's PLAS idea): a resumed turn of an agent program is
ordered by its program's first arrival, not its own, so a program that already waited keeps
its place ahead of newcomers instead of re-queueing after every tool call."""

from __future__ import annotations

from typing import Optional


def program_fcfs_key(own_arrival: float, program_arrival: Optional[float]) -> float:
    """Sort key for the waiting queue (smaller first). Both times on the same clock."""
    return own_arrival if program_arrival is None else min(own_arrival, program_arrival)
