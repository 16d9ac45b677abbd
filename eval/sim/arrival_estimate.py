"""When each turn of a program will arrive, as far as the run so far tells (pure).

A turn's arrival is exact once the engine has scheduled it (its predecessor finished and the
tool's duration is known from the trace) and for a program's entry turns (the trace's arrival).
Any other turn waits for predecessors still queued or running; it is estimated as the latest of
(predecessor's finish + the tool's duration in between), a predecessor's finish being its
admission (or estimated arrival) + its unloaded service time. Queueing delays still to come are
not foreseen, so the estimate is early under load; the order it gives between programs is what
Bélády's rule reads (eval/sim/belady.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from eval.traces.format import Program


@dataclass(frozen=True)
class TurnGraph:
    """What each turn's arrival waits for: (predecessor turn, gap in s after its finish) pairs;
    none: the program's arrival. Sequential programs: the previous turn and its tool call. DAG
    programs: an agent's previous turn and its tool call, or for an agent's first turn the last
    turns of its predecessor agents (AND-join, no gap)."""

    arrival_s: float
    waits_for: tuple[tuple[tuple[int, float], ...], ...]

    @classmethod
    def of(cls, program: Program) -> "TurnGraph":
        turns = program.turns
        waits: list[tuple[tuple[int, float], ...]] = []
        if not program.is_dag:
            for index in range(len(turns)):
                waits.append(((index - 1, turns[index - 1].tool_duration_s),) if index else ())
            return cls(program.arrival_s, tuple(waits))
        owned = program.agent_turns()
        previous = {n: p for indices in owned.values() for p, n in zip(indices, indices[1:])}
        for index, turn in enumerate(turns):
            if index in previous:
                waits.append(((previous[index], turns[previous[index]].tool_duration_s),))
            else:
                waits.append(tuple((owned[pred][-1], 0.0) for pred in program.agent_deps[turn.agent_id]))
        return cls(program.arrival_s, tuple(waits))


@dataclass
class TurnProgress:
    """What the run has told about one turn so far (None: not yet)."""

    arrival_s: Optional[float] = None  # scheduled (its arrival time is known) or arrived
    admitted_s: Optional[float] = None
    finished_s: Optional[float] = None


@dataclass
class ArrivalEstimate:
    graph: TurnGraph
    service_s: Sequence[float]  # each turn's unloaded service time (prefill of its append + decode)
    progress: dict[int, TurnProgress] = field(default_factory=dict)

    def pending_arrivals(self) -> dict[int, float]:
        """Estimated arrival of every turn not yet admitted; admitted turns map to math.inf."""
        arrival: dict[int, float] = {}
        finish: dict[int, float] = {}

        def arrival_of(index: int) -> float:
            if index not in arrival:
                known = self.progress.get(index)
                if known is not None and known.arrival_s is not None:
                    arrival[index] = known.arrival_s
                else:
                    waits = self.graph.waits_for[index]
                    arrival[index] = max((finish_of(p) + gap for p, gap in waits), default=self.graph.arrival_s)
            return arrival[index]

        def finish_of(index: int) -> float:
            if index not in finish:
                known = self.progress.get(index) or TurnProgress()
                if known.finished_s is not None:
                    finish[index] = known.finished_s
                else:
                    start = known.admitted_s if known.admitted_s is not None else arrival_of(index)
                    finish[index] = start + self.service_s[index]
            return finish[index]

        out = {}
        for index in range(len(self.graph.waits_for)):
            known = self.progress.get(index)
            out[index] = math.inf if known is not None and known.admitted_s is not None else arrival_of(index)
        return out
