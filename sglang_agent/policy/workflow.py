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
    """Graph mode: the state is the frontier, not one current agent. An agent *runs* from its step
    until one of its successors steps; it is *ready* when a predecessor ran since it last ran (or,
    before any step, when it is an entry). Fan-out steps run in parallel, and a join may step once
    one of its predecessors ran. Steps-to-execution: running 0, ready 1, then along the edges: in a
    DAG a join waits for all its predecessors (KVFlow's AND-join: max over them + 1), in a graph
    with cycles for the first (min + 1). Schedule mode: one position in the declared order."""

    workflow_id: str
    agents: tuple[str, ...]
    edges: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schedule: tuple[str, ...] = ()
    dag: bool = False
    # Schedule mode: the schedule index that ran last (and its agent).
    current: Optional[str] = None
    position: int = -1
    # Graph mode: the order in which agents last stepped (a step sequence number each).
    last_run: dict[str, int] = field(default_factory=dict)
    sinks_done: set = field(default_factory=set)  # running agents without successors whose turn ended
    seq: int = 0
    _preds: Optional[dict] = field(default=None, repr=False, compare=False)
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
        return cls(workflow_id, tuple(agents), {a: tuple(s) for a, s in successors.items()}, dag=dag)

    @classmethod
    def from_schedule(cls, workflow_id: str, agents: list[str], schedule: list[str]) -> "Workflow":
        _check_agents(agents)
        if not schedule:
            raise WorkflowError("the schedule is empty")
        unknown = sorted(set(schedule) - set(agents))
        if unknown:
            raise WorkflowError(f"schedule names unknown agent(s) {unknown}")
        return cls(workflow_id, tuple(agents), schedule=tuple(schedule))

    # ---- the frontier (graph mode) ---------------------------------------------------------
    @property
    def predecessors(self) -> dict[str, tuple[str, ...]]:
        if self._preds is None:
            preds: dict[str, list[str]] = {a: [] for a in self.agents}
            for src, succ in self.edges.items():
                for dst in succ:
                    preds[dst].append(src)
            self._preds = {a: tuple(p) for a, p in preds.items()}
        return self._preds

    def running(self) -> set[str]:
        """Agents that stepped and none of whose successors stepped since."""
        return {a for a, t in self.last_run.items() if not any(self.last_run.get(b, -1) > t for b in self.edges[a])}

    def ready(self) -> set[str]:
        """Agents not running that may step now: a predecessor ran since they last ran (before
        any step: the entries)."""
        if not self.last_run:
            return set(self._entries())
        running = self.running()
        preds = self.predecessors
        return {a for a in self.agents if a not in running
                and any(self.last_run.get(p, -1) > self.last_run.get(a, -1) for p in preds[a])}

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
        elif not self.last_run and agent_id not in self._entries():
            raise WorkflowError(f"{agent_id!r} is not an entry agent of workflow {self.workflow_id!r}")
        elif self.last_run and agent_id not in self.ready():
            preds = self.predecessors[agent_id]
            if not preds:
                raise WorkflowError(f"no edge leads to {agent_id!r} in workflow {self.workflow_id!r}")
            raise WorkflowError(f"no edge to {agent_id!r} from an agent that ran since it last ran in workflow "
                                f"{self.workflow_id!r} (its predecessors: {list(preds)})")

    def advance(self, agent_id: str) -> None:
        self.check_step(agent_id)
        if self.schedule:
            self.position += 1
            self.current = agent_id
            return
        self.seq += 1
        self.last_run[agent_id] = self.seq
        self.sinks_done.discard(agent_id)

    @property
    def at_last_step(self) -> bool:
        """Nothing is left to run: the schedule's last entry runs, or every running agent has no
        successor and none is ready."""
        if self.schedule:
            return self.position == len(self.schedule) - 1
        running = self.running()
        return bool(running) and all(not self.edges[a] for a in running) and not self.ready()

    def turn_ended(self, agent_id: str) -> bool:
        """`agent_id`'s turn finished with no tool call to follow; True: the workflow is over (the
        last step's turn, or, with parallel last agents, the last of their turns)."""
        if self.schedule:
            return self.current == agent_id and self.at_last_step
        running = self.running()
        if agent_id in running and not self.edges[agent_id]:
            self.sinks_done.add(agent_id)
        return agent_id in running and self.at_last_step and running <= self.sinks_done

    def end(self) -> None:
        """The last step's turn has finished. Without this the last agent would keep "runs now"
        (0) forever and its prefix would outrank every live workflow's."""
        self.ended = True

    def steps_to_execution(self) -> dict[str, Optional[int]]:
        """Steps until each agent runs next: 0 = running now, None = never again."""
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
        steps: dict[str, Optional[int]] = {a: None for a in self.agents}
        if not self.last_run:
            sources = {a: 0 for a in self._entries()}
        else:
            sources = {a: 0 for a in self.running()}
            if not self.dag:
                sources.update({a: 1 for a in self.ready()})
        steps.update(sources)
        if self.dag:
            return self._and_join_steps(steps)
        queue = deque(sorted(sources, key=sources.get))
        while queue:  # BFS from the frontier: OR-join, a loop reaches its agents again
            agent = queue.popleft()
            for nxt in self.edges[agent]:
                if steps[nxt] is None:
                    steps[nxt] = steps[agent] + 1
                    queue.append(nxt)
        return steps

    def _and_join_steps(self, steps: dict[str, Optional[int]]) -> dict[str, Optional[int]]:
        """DAG: an agent that has not run waits for every predecessor that has not run either
        (max + 1); predecessors that ran are satisfied. One that ran and is neither running nor
        ready never runs again in this instance."""
        preds = self.predecessors
        for agent in _topological(self.edges):
            if steps[agent] is not None or agent in self.last_run:
                continue
            waits = [steps[p] for p in preds[agent] if p not in self.last_run]
            if any(w is None for w in waits):
                continue  # behind an agent that never runs again
            steps[agent] = max(waits, default=0) + 1  # all its predecessors ran: ready (1)
        return steps


def _check_agents(agents: list[str]) -> None:
    if not agents:
        raise WorkflowError("a workflow needs at least one agent")
    if len(set(agents)) != len(agents):
        raise WorkflowError("agent ids must be unique")


def _topological(successors) -> list[str]:
    indegree = {a: 0 for a in successors}
    for succ in successors.values():
        for d in succ:
            indegree[d] += 1
    ready = deque(a for a in successors if indegree[a] == 0)
    order = []
    while ready:
        a = ready.popleft()
        order.append(a)
        for d in successors[a]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    return order


def _check_acyclic(successors: dict[str, list[str]]) -> None:
    if len(_topological(successors)) != len(successors):
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
