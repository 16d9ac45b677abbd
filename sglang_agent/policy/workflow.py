"""KVFlow steps-to-execution (Pan et al., arXiv 2507.07400), pure.

A workflow is a set of agents and either an explicit step schedule (agent ids in execution
order, repeats allowed) or a step graph (edges from an agent to the agents that may run next).
For each agent it gives the number of workflow steps until that agent runs next; the cache
evicts the prefixes needed furthest in the future first (KVFlow's Agent Step Graph: "steps to
execution", with a shared prefix taking the minimum over the agents that use it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional


# Steps of an agent no live workflow runs again: ranks after every node under LRU (KVFlow evicts
# such prefixes first); finite so that it still orders by the pace like any other steps value.
NEVER_AGAIN = 1_000_000_000


class WorkflowError(ValueError):
    """A workflow definition or step that contradicts itself."""


class UnknownAgentError(WorkflowError):
    """A step names an agent the workflow does not have."""


@dataclass
class Workflow:
    workflow_id: str
    agents: tuple[str, ...]
    edges: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schedule: tuple[str, ...] = ()
    # Progress: the agent that ran last (graph mode) or the schedule index that ran last.
    current: Optional[str] = None
    position: int = -1
    # The last step's turn has finished: no agent runs again (steps all None).
    ended: bool = False

    @classmethod
    def from_graph(cls, workflow_id: str, agents: list[str], edges: list[tuple[str, str]], dag: bool = False) -> "Workflow":
        _check_agents(agents)
        successors: dict[str, list[str]] = {a: [] for a in agents}
        for src, dst in edges:
            for end in (src, dst):
                if end not in successors:
                    raise WorkflowError(f"edge ({src!r}, {dst!r}) names unknown agent {end!r}")
            if dst not in successors[src]:
                successors[src].append(dst)
        if dag:
            _check_acyclic(successors)
        return cls(workflow_id, tuple(agents), {a: tuple(s) for a, s in successors.items()})

    @classmethod
    def from_schedule(cls, workflow_id: str, agents: list[str], schedule: list[str]) -> "Workflow":
        _check_agents(agents)
        if not schedule:
            raise WorkflowError("the schedule is empty")
        unknown = sorted(set(schedule) - set(agents))
        if unknown:
            raise WorkflowError(f"schedule names unknown agent(s) {unknown}")
        return cls(workflow_id, tuple(agents), schedule=tuple(schedule))

    # ---- progress ------------------------------------------------------------------------
    def check_step(self, agent_id: str) -> None:
        """Raise WorkflowError unless `agent_id` may run next."""
        if agent_id not in self.agents:
            raise UnknownAgentError(f"unknown agent {agent_id!r} in workflow {self.workflow_id!r}")
        if self.ended:
            raise WorkflowError(f"workflow {self.workflow_id!r} has ended")
        if self.schedule:
            nxt = self.position + 1
            if nxt >= len(self.schedule):
                raise WorkflowError(f"workflow {self.workflow_id!r} has finished its schedule")
            if self.schedule[nxt] != agent_id:
                raise WorkflowError(f"step {nxt} of the schedule is {self.schedule[nxt]!r}, not {agent_id!r}")
        elif self.current is not None and agent_id not in self.edges[self.current]:
            raise WorkflowError(f"no edge {self.current!r} -> {agent_id!r} in workflow {self.workflow_id!r}")
        elif self.current is None and agent_id not in self._entries():
            raise WorkflowError(f"{agent_id!r} is not an entry agent of workflow {self.workflow_id!r}")

    def advance(self, agent_id: str) -> None:
        self.check_step(agent_id)
        if self.schedule:
            self.position += 1
        self.current = agent_id

    @property
    def at_last_step(self) -> bool:
        """The running agent is the last one: the schedule's last entry, or a graph agent with
        no successor."""
        if self.schedule:
            return self.position == len(self.schedule) - 1
        return self.current is not None and not self.edges[self.current]

    def end(self) -> None:
        """The last step's turn has finished. Without this the last agent would keep "runs now"
        (0) forever and its prefix would outrank every live workflow's."""
        self.ended = True

    def steps_to_execution(self) -> dict[str, Optional[int]]:
        """Steps until each agent runs next: 0 = the agent running now, None = never again."""
        if self.ended:
            return {a: None for a in self.agents}
        if self.schedule:
            return self._schedule_steps()
        return self._graph_steps()

    # ---- internals -----------------------------------------------------------------------
    def _entries(self) -> tuple[str, ...]:
        has_pred = {d for succ in self.edges.values() for d in succ}
        entries = tuple(a for a in self.agents if a not in has_pred)
        return entries or self.agents[:1]  # a pure cycle starts at its first agent

    def _schedule_steps(self) -> dict[str, Optional[int]]:
        start = max(self.position, 0)
        steps: dict[str, Optional[int]] = {a: None for a in self.agents}
        for index in range(start, len(self.schedule)):
            agent = self.schedule[index]
            if steps[agent] is None:
                steps[agent] = index - self.position if self.position >= 0 else index
        return steps

    def _graph_steps(self) -> dict[str, Optional[int]]:
        """BFS over the step graph from the running agent (or the entries before any step)."""
        if self.current is None:
            frontier = [(a, 0) for a in self._entries()]
        else:
            frontier = [(self.current, 0)]
        steps: dict[str, Optional[int]] = {a: None for a in self.agents}
        queue = deque(frontier)
        for agent, d in frontier:
            steps[agent] = d
        while queue:
            agent, d = queue.popleft()
            for nxt in self.edges[agent]:
                if steps[nxt] is None:
                    steps[nxt] = d + 1
                    queue.append((nxt, d + 1))
        return steps


def _check_agents(agents: list[str]) -> None:
    if not agents:
        raise WorkflowError("a workflow needs at least one agent")
    if len(set(agents)) != len(agents):
        raise WorkflowError("agent ids must be unique")


def _check_acyclic(successors: dict[str, list[str]]) -> None:
    indegree = {a: 0 for a in successors}
    for succ in successors.values():
        for d in succ:
            indegree[d] += 1
    ready = [a for a, n in indegree.items() if n == 0]
    seen = 0
    while ready:
        a = ready.pop()
        seen += 1
        for d in successors[a]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    if seen != len(successors):
        raise WorkflowError("the step graph has a cycle but dag=true was requested")


def node_steps(per_session: dict[str, int], session_ids) -> Optional[int]:
    """A shared prefix is needed as soon as its soonest user: min over its sessions' steps."""
    known = [per_session[s] for s in session_ids if s in per_session]
    return min(known) if known else None


@dataclass
class WorkflowPace:
    """How many tree accesses (SGLang's logical LRU clock) one workflow step takes, learned from
    the steps clients report: what turns steps-to-execution into an eviction rank comparable with
    LRU ages (policy/eviction.py). None until two steps of one workflow were seen."""

    smoothing: float = 0.2  # weight of the newest step interval
    accesses_per_step: Optional[float] = None
    _last: dict = field(default_factory=dict)  # workflow id -> counter at its latest step

    def observe_step(self, workflow_id: str, lru_now: float) -> None:
        last = self._last.get(workflow_id)
        self._last[workflow_id] = lru_now
        if last is None or lru_now <= last:
            return
        delta = lru_now - last
        prev = self.accesses_per_step
        self.accesses_per_step = delta if prev is None else (1 - self.smoothing) * prev + self.smoothing * delta

    def forget(self, workflow_id: str) -> None:
        self._last.pop(workflow_id, None)
