"""Critical-path reservation (TokenCake's spatial scheduler, arXiv 2510.18586 §4.2; as its public
repo pku-lemonade/TokenCake does it), pure.

A share of the KV pool is held for the agents on a workflow's critical path, so that a fan-out of
side agents or other tenants cannot take the memory a critical agent is about to need:
- the critical path is the longest chain of agents still to run (remaining depth, TokenCake's graph
  priority), from the frontier: every agent on a longest chain (no slack). Parallel branches of
  equal length are all critical: TokenCake's repo marks only branch 1 of a fan-out, which in our
  simulator starved the other branches and delayed the join that waits for them;
- the reserved share starts at 5% of the pool and moves by 5 points within [5%, max] every 500
  scheduler steps: up when KV usage >= 0.75, down when <= 0.40 (the repo's rule);
- it is *lent*: only what critical agents need now or next (`critical_need_tokens`) is held back
  from other requests, never more than the share, and nothing while no critical agent needs memory
  (no idle reserved memory while requests wait).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

RESERVE_MIN_FRACTION = 0.05
RESERVE_STEP_FRACTION = 0.05
REVISE_EVERY_STEPS = 500
HIGH_KV_USAGE = 0.75
LOW_KV_USAGE = 0.40


def remaining_depth(successors: dict[str, tuple[str, ...]], remaining: set[str]) -> dict[str, int]:
    """For each agent still to run: the agents on the longest chain from it to a sink, through
    agents still to run (itself included). Cycles are cut where met (a loop's depth is its
    unrolled length once)."""
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(agent: str) -> int:
        if agent in depth:
            return depth[agent]
        if agent in visiting:
            return 0
        visiting.add(agent)
        below = [visit(s) for s in successors.get(agent, ()) if s in remaining]
        visiting.discard(agent)
        depth[agent] = 1 + max(below, default=0)
        return depth[agent]

    for agent in sorted(remaining):
        visit(agent)
    return depth


def critical_agents(agents: tuple[str, ...], successors: dict[str, tuple[str, ...]],
                    steps: dict[str, Optional[int]]) -> tuple[str, ...]:
    """The workflow's critical path from now: every agent still to run with no slack, i.e. on a
    longest chain (in agents) from the frontier (running or ready: steps <= 1) to a sink. Parallel
    branches of equal length are all critical (favouring one would only delay the join that waits
    for both); a shorter branch has slack and is not. `steps` are KVFlow's steps-to-execution
    (None: never again). In declaration order."""
    remaining = {a for a in agents if steps.get(a) is not None}
    frontier = {a for a in remaining if steps[a] <= 1}
    if not frontier:
        return ()
    depth = remaining_depth(successors, remaining)
    order = _topological_within(successors, remaining)
    if order is None:  # a cycle among the agents still to run: the single longest chain
        return _longest_chain(agents, successors, remaining, frontier, depth)
    preds: dict[str, list[str]] = {a: [] for a in remaining}
    for a in remaining:
        for b in successors.get(a, ()):
            if b in remaining:
                preds[b].append(a)
    level: dict[str, int] = {}  # agents on the longest chain from the frontier to it, itself included
    for a in order:
        before = [level[p] for p in preds[a] if p in level]
        if a in frontier:
            level[a] = max([1, *(x + 1 for x in before)])
        elif before:
            level[a] = max(before) + 1
    longest = max(level[a] + depth[a] - 1 for a in level)
    return tuple(a for a in agents if a in level and level[a] + depth[a] - 1 == longest)


def _topological_within(successors: dict[str, tuple[str, ...]], remaining: set[str]) -> Optional[list[str]]:
    indegree = {a: 0 for a in remaining}
    for a in remaining:
        for b in successors.get(a, ()):
            if b in remaining:
                indegree[b] += 1
    ready = sorted(a for a, d in indegree.items() if d == 0)
    order = []
    while ready:
        a = ready.pop(0)
        order.append(a)
        for b in successors.get(a, ()):
            if b in remaining:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return order if len(order) == len(remaining) else None


def _longest_chain(agents, successors, remaining, frontier, depth) -> tuple[str, ...]:
    order = {a: i for i, a in enumerate(agents)}
    chain = [max(frontier, key=lambda a: (depth[a], -order[a]))]
    seen = set(chain)
    while True:
        nxt = [s for s in successors.get(chain[-1], ()) if s in remaining and s not in seen]
        if not nxt:
            return tuple(chain)
        best = max(nxt, key=lambda a: (depth[a], -order[a]))
        chain.append(best)
        seen.add(best)


def schedule_successors(schedule: tuple[str, ...], position: int) -> dict[str, tuple[str, ...]]:
    """A step schedule's remaining order as a chain of edges (sequential: the whole rest is the
    critical path)."""
    rest = list(dict.fromkeys(schedule[max(position, 0):]))
    return {a: (b,) for a, b in zip(rest, rest[1:])}


@dataclass
class ReservationSizer:
    """The reserved share of the pool, revised from KV usage every REVISE_EVERY_STEPS steps."""

    max_fraction: float
    fraction: float = field(init=False)
    steps_since_revision: int = 0

    def __post_init__(self) -> None:
        self.fraction = min(RESERVE_MIN_FRACTION, self.max_fraction)

    def observe_step(self, kv_usage: float) -> None:
        self.steps_since_revision += 1
        if self.steps_since_revision < REVISE_EVERY_STEPS:
            return
        self.steps_since_revision = 0
        low = min(RESERVE_MIN_FRACTION, self.max_fraction)
        if kv_usage >= HIGH_KV_USAGE:
            self.fraction = min(self.max_fraction, self.fraction + RESERVE_STEP_FRACTION)
        elif kv_usage <= LOW_KV_USAGE:
            self.fraction = max(low, self.fraction - RESERVE_STEP_FRACTION)

    def reserved_tokens(self, pool_tokens: int) -> int:
        return int(self.fraction * pool_tokens)


def held_tokens(reserved_tokens: int, critical_need_tokens: int) -> int:
    """What other requests must leave free right now: the critical agents' need, up to the share
    (the rest of the share is lent out)."""
    return max(0, min(reserved_tokens, critical_need_tokens))


def admits_other(need_tokens: int, room_tokens: int, held: int) -> bool:
    """A request off the critical path may take memory only beyond what is held for it."""
    return held <= 0 or room_tokens - need_tokens >= held
