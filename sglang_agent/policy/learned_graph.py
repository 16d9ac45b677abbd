"""Workflow steps without a declaration (CacheSage, arXiv 2605.27744: agent transition matrices
learned online), pure.

Most multi-agent frameworks never declare their schedule, but each step says which workflow
instance and which agent (role) it is. Two things are learned from that:

- Within one instance, which agents an agent followed: the interval order of their runs. An agent
  runs from its step until its turn ends with no tool call to follow; B follows A when A ended
  before B stepped and no other agent ran wholly in between (the Hasse diagram of the interval
  order). A fan-out planner -> w1, w2, w3 gives planner -> each worker however the workers
  interleave; the reviewer that steps after all of them follows each of them, not the planner.
- Across instances, per role: how often a completed run of role A was followed by role B, as an
  exponentially weighted frequency (CacheSage's decay). An edge is trusted once A completed at
  least `min_observations` times and the frequency is at least `min_probability`; below that the
  policy says nothing (None: plain LRU order), so a wrong guess costs no more than upstream.

Steps-to-execution of an instance come from its frontier over the trusted edges: running agents 0,
then breadth first (OR-join: min + 1) from the running agents and from the agents that ended and
nothing followed yet. They cover roles the instance has not run yet, which is what the role
prefixes of the cache need (a new instance's reviewer finds its role prompt kept).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_MIN_OBSERVATIONS = 2
DEFAULT_MIN_PROBABILITY = 0.5
DEFAULT_DECAY = 0.1  # CacheSage's decay of older transitions
MAX_ROLES_LEARNED = 4096


@dataclass
class _RoleRow:
    completions: float = 0.0  # decayed count of completed runs of this role
    runs: int = 0  # undecayed, for the minimum number of observations
    successors: dict[str, float] = field(default_factory=dict)  # decayed count of each follower role


@dataclass
class TransitionGraph:
    """Role -> role transitions learned online, bounded (least recently seen roles go first)."""

    min_observations: int = DEFAULT_MIN_OBSERVATIONS
    min_probability: float = DEFAULT_MIN_PROBABILITY
    decay: float = DEFAULT_DECAY
    max_roles: int = MAX_ROLES_LEARNED
    rows: OrderedDict[str, _RoleRow] = field(default_factory=OrderedDict)

    def _row(self, role: str) -> _RoleRow:
        row = self.rows.get(role)
        if row is None:
            row = self.rows[role] = _RoleRow()
            while len(self.rows) > self.max_roles:
                self.rows.popitem(last=False)
        self.rows.move_to_end(role)
        return row

    def observe_completion(self, role: str) -> None:
        """A run of `role` ended: older evidence of what follows it weighs a little less."""
        row = self._row(role)
        keep = 1.0 - self.decay
        row.completions = row.completions * keep + 1.0
        row.runs += 1
        row.successors = {r: c * keep for r, c in row.successors.items() if c * keep > 1e-3}

    def observe_transition(self, src: str, dst: str) -> None:
        row = self._row(src)
        row.successors[dst] = row.successors.get(dst, 0.0) + 1.0

    def probability(self, src: str, dst: str) -> float:
        row = self.rows.get(src)
        if row is None or row.completions <= 0:
            return 0.0
        return min(1.0, row.successors.get(dst, 0.0) / row.completions)

    def trusted(self, role: str) -> bool:
        row = self.rows.get(role)
        return row is not None and row.runs >= self.min_observations

    def successors(self, role: str) -> list[str]:
        """Roles that follow `role` with enough evidence (empty: not trusted, or a last role)."""
        if not self.trusted(role):
            return []
        row = self.rows[role]
        return sorted(r for r in row.successors if self.probability(role, r) >= self.min_probability)

    def is_last(self, role: str) -> bool:
        """`role` is trusted and nothing trusted follows it: an instance ends with it."""
        return self.trusted(role) and not self.successors(role)


@dataclass
class LearnedRun:
    """One workflow instance that was never declared: its agents in the order they appeared, the
    role of each, and the latest run of each as (step seq, end seq or None while it runs)."""

    workflow_id: str
    agents: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)  # agent -> seq its latest run ended at
    followed: set = field(default_factory=set)  # agents that ended and something followed since
    # Agents whose latest run's end the graph has counted. A turn's end is only counted when
    # something follows it or the instance is forgotten: a tool call recognised in the answer
    # arrives after the turn ended, and reopens the run (`reopen`).
    counted: set = field(default_factory=set)
    seq: int = 0

    def step(self, agent_id: str, role: str) -> list[str]:
        """`agent_id` steps; returns the agents it follows (the transitions to learn). A step of an
        agent that runs already changes nothing (its step was said twice)."""
        if agent_id in self.started and agent_id not in self.ended:
            return []
        if agent_id not in self.roles:
            self.agents.append(agent_id)
            self.roles[agent_id] = role
        self.seq += 1
        preds = self._immediate_predecessors(self.seq)
        self.followed.update(preds)
        self.started[agent_id] = self.seq
        self.ended.pop(agent_id, None)
        self.followed.discard(agent_id)
        self.counted.discard(agent_id)
        return preds

    def reopen(self, agent_id: str) -> bool:
        """The agent's turn ended in a tool call after all (recognised once the answer was read):
        it still runs, unless something followed it already."""
        if agent_id not in self.ended or agent_id in self.followed:
            return False
        del self.ended[agent_id]
        self.counted.discard(agent_id)
        return True

    def uncounted_ends(self) -> list[str]:
        """Agents whose run ended and the graph has not counted it (a last role's evidence)."""
        return sorted(a for a in self.ended if a not in self.counted)

    def end_run(self, agent_id: str) -> bool:
        """`agent_id`'s turn ended with no tool call to follow; True if it was running."""
        if agent_id not in self.started or agent_id in self.ended:
            return False
        self.seq += 1
        self.ended[agent_id] = self.seq
        return True

    def running(self) -> set[str]:
        return {a for a in self.started if a not in self.ended}

    def leaves(self) -> set[str]:
        """Agents that ended and that nothing has followed yet: what runs next follows them."""
        return {a for a in self.ended if a not in self.followed}

    def _immediate_predecessors(self, now: int) -> list[str]:
        done = [a for a in self.ended if self.ended[a] < now]
        preds = []
        for a in done:
            between = any(self.started[b] > self.ended[a] and self.ended[b] < now for b in done if b != a)
            if not between:
                preds.append(a)
        return sorted(preds)

    def steps_to_execution(self, graph: TransitionGraph) -> tuple[dict[str, Optional[int]], dict[str, int]]:
        """(steps of this instance's agents, steps of roles it may run next), from the frontier
        over the trusted edges. None: the graph is not sure (LRU order); roles with no
        prediction are left out."""
        role_steps: dict[str, int] = {}
        queue: deque[tuple[str, int]] = deque()
        for agent in sorted(self.running()):
            role_steps[self.roles[agent]] = 0
            queue.append((self.roles[agent], 0))
        for agent in sorted(self.leaves()):
            queue.append((self.roles[agent], 0))  # ended: not needed itself, its followers are
        while queue:  # breadth first: OR-join (min + 1)
            role, steps = queue.popleft()
            for nxt in graph.successors(role):
                if nxt not in role_steps or role_steps[nxt] > steps + 1:
                    role_steps[nxt] = steps + 1
                    queue.append((nxt, steps + 1))
        agent_steps: dict[str, Optional[int]] = {}
        running = self.running()
        for agent in self.agents:
            role = self.roles[agent]
            if agent in running:
                agent_steps[agent] = 0
            elif agent in self.ended and role_steps.get(role, 0) > 0:
                agent_steps[agent] = role_steps[role]  # the graph says its role runs again (a loop)
            else:
                agent_steps[agent] = None
        return agent_steps, role_steps

    def finished(self, graph: TransitionGraph) -> bool:
        """Nothing runs and every agent nothing followed is a trusted last role."""
        if self.running() or not self.ended:
            return False
        return all(graph.is_last(self.roles[a]) for a in self.leaves())
