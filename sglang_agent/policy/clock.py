"""The step clock: one time value per scheduler step, the same on every tensor-parallel rank.

SGLang requires every tree mutation to happen identically on all TP ranks. Pins expire, host
copies lapse and prefetches start at times; if each rank read its own clock, a pin could expire
on rank 0 one step before rank 1 and the ranks' trees would diverge. So every time-dependent
decision of ours reads this clock, which only moves when `tick` is called: in the server once per
scheduler step with the time rank 0 read and broadcast with that step's inputs; in the simulator
with the simulated time; in tests by hand."""

from __future__ import annotations


class StepClock:
    def __init__(self, start_s: float = 0.0):
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def tick(self, now_s: float) -> None:
        # Never backwards: a late or reordered tick must not un-expire a pin.
        if now_s > self.now_s:
            self.now_s = now_s
