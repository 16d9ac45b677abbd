"""Bélády's offline optimum (Bélády 1966, "MIN") as the simulator's eviction order: the victim is
the cached leaf whose next use lies farthest in the future, read from the trace.

Next use of a cached tree node (tokens [d, d + len) of its root path P): the earliest arrival
among the turns not yet admitted whose prompt starts with P[:d + 1], i.e. whose prefix match at
admission would read at least one of its tokens: later turns of its own program, and for DAG
workflows every instance's agents whose role prompt it holds (eval/sim/future_uses.py). A node no
pending prompt reads is never used again and goes first; ties fall back to LRU.

Arrival times depend on the run itself (a turn comes a tool call after its predecessor finished),
so they are the exact ones wherever the run has fixed them (scheduled or arrived turns, program
arrivals) and otherwise an unloaded estimate (eval/sim/arrival_estimate.py). That is the usual
offline-optimal yardstick for caches (SAGA, arXiv 2605.00528, compares its predictor, 1.31x of
Bélády's misses, and LRU, 2.84x, against it): the victim choice knows the reference stream, and
nothing else changes: admission, batching and the host tier are the engine's, as for the policy
compared (`belady` runs sglang-lru's admission; `belady+hicache` sglang-hicache's).

Two limits, both in the bound's favour being a yardstick rather than a proof: MIN is optimal for
unit-size pages; whole radix leaves of unequal size are evicted here (farthest-first on variable
sizes is the usual heuristic, optimal is NP-hard); and the reference stream moves with the victim
choice (a miss's recompute delays the program's later turns).
"""

from __future__ import annotations

from array import array
from typing import Optional

from sglang.srt.mem_cache.evict_policy import EvictionStrategy

from eval.sim.arrival_estimate import ArrivalEstimate, TurnGraph, TurnProgress
from eval.sim.engine import Simulator
from eval.sim.future_uses import FutureUseIndex, TriePosition
from eval.traces.format import Program


def _tokens(node) -> array:
    ids = node.key.raw_token_ids()
    return ids if isinstance(ids, array) and ids.typecode == "q" else array("q", ids)


class NodeLocator:
    """A cached tree node -> the trie position of its first token (memoized per node id and key
    length: a split shortens the lower half's key, so its entry is made again)."""

    def __init__(self, index: FutureUseIndex):
        self.index = index
        self._end: dict[tuple[int, int], Optional[TriePosition]] = {}

    def _end_of(self, node) -> Optional[TriePosition]:
        if node.parent is None:
            return self.index.start
        memo = (node.id, len(node.key))
        if memo not in self._end:
            self._end[memo] = self.index.advance(self._end_of(node.parent), _tokens(node))
        return self._end[memo]

    def first_token(self, node) -> Optional[TriePosition]:
        return self.index.advance(self._end_of(node.parent), _tokens(node)[:1])


class BeladyEviction(EvictionStrategy):
    """SGLang's eviction walk pops the smallest priority first: farthest next use first."""

    def __init__(self, index: FutureUseIndex):
        self.index = index
        self.locator = NodeLocator(index)

    def next_use_s(self, node) -> float:
        return self.index.next_use_s(self.locator.first_token(node))

    def get_priority(self, node) -> tuple[float, float]:
        return (-self.next_use_s(node), node.last_access_time)


def service_times_s(program: Program, cost) -> list[float]:
    """Each turn alone on the GPU: prefill of its append (the context assumed cached) + decode."""
    prompts = 0
    times = []
    for turn in program.turns:
        prompts += len(turn.append_tokens)
        step_s = cost.decode_step_s(1, prompts) + cost.iteration_overhead_s
        times.append(cost.prefill_s(max(1, len(turn.append_tokens)), prompts) + step_s * len(turn.output_tokens))
        prompts += len(turn.output_tokens)
    return times


class BeladySimulator(Simulator):
    """The engine unchanged but for the victim choice; it tells the index what the run fixes."""

    def __init__(self, programs: list[Program], cost, policy, **kwargs):
        if kwargs.get("cluster") is not None:
            raise ValueError("Bélády needs the whole trace on one worker (no cluster routing)")
        # Set before the engine's constructor: it schedules every program's first turn.
        self.future = FutureUseIndex(((i, t), array("q", prompt)) for i, p in enumerate(programs)
                                     for t, prompt in enumerate(p.turn_inputs()))
        self.estimates = [ArrivalEstimate(TurnGraph.of(p), service_times_s(p, cost)) for p in programs]
        super().__init__(programs, cost, policy, **kwargs)
        self.belady = BeladyEviction(self.future)
        self.cache.tree_core.eviction_strategy = self.belady  # before the first eviction binds it

    def _progress(self, program_index: int, turn: int) -> TurnProgress:
        return self.estimates[program_index].progress.setdefault(turn, TurnProgress())

    def _refresh(self, program_index: int) -> None:
        for turn, arrival_s in self.estimates[program_index].pending_arrivals().items():
            self.future.set_arrival((program_index, turn), arrival_s)

    def _schedule(self, time_s: float, program_index: int, turn: int) -> None:
        super()._schedule(time_s, program_index, turn)
        self._progress(program_index, turn).arrival_s = time_s
        self._refresh(program_index)

    def _admit(self):
        admitted = super()._admit()
        for req in admitted:
            self._progress(req.program_index, req.turn).admitted_s = self.now
            self._refresh(req.program_index)
        return admitted

    def _finish(self, req) -> None:
        self._progress(req.program_index, req.turn).finished_s = self.now
        super()._finish(req)  # schedules the next turns, which refreshes the estimates
        self._refresh(req.program_index)
