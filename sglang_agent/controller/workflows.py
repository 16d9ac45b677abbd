"""Declared multi-agent workflows (KVFlow): which session holds each agent's prefix, the steps until
each agent runs again, and what to tell the cache and the host tier when they change.

Roles: an agent's fixed prompt (its role, default the agent id) is shared by every instance of a
workflow, whatever the session ids. The role's prefix is the deepest node the latest two sessions
of that role share (before a second one: the one session's path); it carries the soonest steps of
that role over every live workflow, so a new instance's planner finds its role prompt cached
although its own session has no path yet."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

from sglang_agent.controller.ports import HostTier, SessionKV
from sglang_agent.controller.reservation import CriticalPath, CriticalReservation
from sglang_agent.hints import MAX_WORKFLOW_AGENTS, HintError, WorkflowDef, WorkflowStep
from sglang_agent.policy.learned_graph import LearnedRun, TransitionGraph
from sglang_agent.policy.eviction import HORIZON_STEPS
from sglang_agent.policy.reservation import critical_agents, schedule_successors
from sglang_agent.policy.workflow import NEVER_AGAIN, UnknownAgentError, Workflow, WorkflowError, WorkflowPace

MAX_ENDED_WORKFLOWS_REMEMBERED = 4096
MAX_ROLES_REMEMBERED = 4096
# How long after a turn's end a tool call recognised in its answer (or a tool_start sent after the
# answer) still counts as that turn's: a workflow the turn's end ended is reopened.
REOPEN_GRACE_S = 2.0
ROLE_PREFIX = "role:"  # the cache's key for a role's prefix (not a session of any client)


class WorkflowRegistry:
    def __init__(self, kv: SessionKV, host_tier: Optional[HostTier], pace: WorkflowPace,
                 clock: Callable[[], float], session_exists: Callable[[str], bool],
                 graph: Optional[TransitionGraph] = None, reservation: Optional[CriticalReservation] = None):
        self.kv = kv
        self.reservation = reservation  # critical-path reservation (None or disabled: off)
        self.session_exists = session_exists
        self.host_tier = host_tier
        self.pace = pace
        self.clock = clock
        self.workflows: dict[str, Workflow] = {}
        self.steps: dict[str, dict[str, Optional[int]]] = {}  # workflow -> its agents' current steps
        self.last_active: dict[str, float] = {}  # workflow -> step-clock time of its latest hint
        # (workflow id, agent id) -> session whose cached turns are that agent's prefix, and back
        self.agent_sessions: dict[tuple[str, str], str] = {}
        self.session_roles: dict[str, set[tuple[str, str]]] = {}
        # Ids of ended workflows (bounded): a later step gets 409 "ended", not 404.
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.role_of: dict[tuple[str, str], str] = {}  # (workflow, agent) -> role
        self.role_members: dict[str, set[tuple[str, str]]] = {}  # role -> its (workflow, agent)s, live
        # role -> the latest session that finished a turn in it (bounded, outlives its workflow)
        self.role_last_session: OrderedDict[str, str] = OrderedDict()
        self.definitions: dict[str, WorkflowDef] = {}  # declared workflow -> its declaration
        # session -> (workflow its turn's end ended, its agent, the declaration, the workflow, when):
        # a tool call recognised after the turn ended reopens it (bounded).
        self.ended_by_turn: OrderedDict[str, tuple] = OrderedDict()
        # Learned workflows (None: a step of an undeclared workflow is 404).
        self.graph = graph
        self.learned: dict[str, LearnedRun] = {}
        self.predicted: dict[str, dict[str, int]] = {}  # learned workflow -> steps of roles it may run next
        self.predicted_by_role: dict[str, set[str]] = {}  # role -> learned workflows predicting it

    def __len__(self) -> int:
        return len(self.workflows) + len(self.learned)

    def declare(self, definition: WorkflowDef) -> dict:
        if definition.workflow_id in self.workflows:
            raise HintError(409, f"workflow {definition.workflow_id!r} is already declared")
        if definition.workflow_id in self.learned:
            raise HintError(409, f"workflow {definition.workflow_id!r} is running undeclared (its steps came "
                                 f"first); declare the next instance under a new id")
        agent_ids = [a.agent_id for a in definition.agents]
        sessions = [a.session_id for a in definition.agents]
        if len(set(sessions)) != len(sessions):
            raise HintError(400, "workflow: two agents share one session_id")
        try:
            if definition.schedule is not None:
                workflow = Workflow.from_schedule(definition.workflow_id, agent_ids, list(definition.schedule))
            else:
                workflow = Workflow.from_graph(definition.workflow_id, agent_ids, list(definition.edges), definition.dag)
        except WorkflowError as e:
            raise HintError(400, f"workflow: {e}") from None
        self._register(workflow, definition)
        return {"workflow_id": workflow.workflow_id, "steps_to_execution": self._push(workflow)}

    def _register(self, workflow: Workflow, definition: WorkflowDef) -> None:
        self.workflows[workflow.workflow_id] = workflow
        self.definitions[workflow.workflow_id] = definition
        self.ended.pop(workflow.workflow_id, None)
        for agent in definition.agents:
            self._add_agent(workflow.workflow_id, agent.agent_id, agent.session_id, agent.role or agent.agent_id)

    def _add_agent(self, wf_id: str, agent_id: str, session_id: str, role: str) -> None:
        key = (wf_id, agent_id)
        self.agent_sessions[key] = session_id
        self.session_roles.setdefault(session_id, set()).add(key)
        self.role_of[key] = role
        self.role_members.setdefault(role, set()).add(key)

    def _remove_agent(self, wf_id: str, agent_id: str) -> tuple[str, str]:
        """The agent's (session, role), its entries gone from the indexes."""
        key = (wf_id, agent_id)
        role = self.role_of.pop(key)
        members = self.role_members[role]
        members.discard(key)
        if not members:
            del self.role_members[role]
        session_id = self.agent_sessions.pop(key)
        keys = self.session_roles[session_id]
        keys.discard(key)
        if not keys:
            del self.session_roles[session_id]
        return session_id, role

    def check_step(self, step: WorkflowStep) -> Optional[Workflow]:
        """The workflow `step` may advance; raises HintError (nothing changes) otherwise. None: the
        step is one of an undeclared workflow (learned)."""
        workflow = self.workflows.get(step.workflow_id)
        if workflow is None and step.workflow_id in self.ended:
            raise HintError(409, f"workflow {step.workflow_id!r} has ended")
        if workflow is None:
            self._check_learned_step(step)
            return None
        try:
            workflow.check_step(step.agent_id)
        except UnknownAgentError as e:
            raise HintError(404, str(e)) from None
        except WorkflowError as e:
            raise HintError(409, str(e)) from None
        return workflow

    def step(self, step: WorkflowStep) -> dict:
        workflow = self.check_step(step)
        if workflow is None:
            return self._learned_step(step)
        workflow.advance(step.agent_id)
        self.pace.observe_step(workflow.workflow_id, self.kv.access_clock())
        return {"workflow_id": step.workflow_id, "steps_to_execution": self._push(workflow)}

    # ---- learned workflows ---------------------------------------------------------------------
    def _check_learned_step(self, step: WorkflowStep) -> None:
        if self.graph is None or step.session_id is None:
            how = ("" if self.graph is None else
                   ", or send the step inline (agent.workflow_step) or with its session_id for the server to learn it")
            raise HintError(404, f"unknown workflow {step.workflow_id!r}: declare it with POST /agent/workflow{how}")
        run = self.learned.get(step.workflow_id)
        if run is None:
            return
        known = self.agent_sessions.get((step.workflow_id, step.agent_id))
        if known is not None and known != step.session_id:
            raise HintError(409, f"agent {step.agent_id!r} of workflow {step.workflow_id!r} runs in session "
                                 f"{known!r}, not {step.session_id!r}")
        role = step.role or step.agent_id
        if step.agent_id in run.roles and run.roles[step.agent_id] != role:
            raise HintError(409, f"agent {step.agent_id!r} of workflow {step.workflow_id!r} has role "
                                 f"{run.roles[step.agent_id]!r}, not {role!r}")
        if step.agent_id not in run.roles and len(run.agents) >= MAX_WORKFLOW_AGENTS:
            raise HintError(413, f"workflow {step.workflow_id!r} has {MAX_WORKFLOW_AGENTS} agents already")

    def _learned_step(self, step: WorkflowStep) -> dict:
        run = self.learned.get(step.workflow_id)
        if run is None:
            run = self.learned[step.workflow_id] = LearnedRun(step.workflow_id)
        role = step.role or step.agent_id
        if (step.workflow_id, step.agent_id) not in self.agent_sessions:
            self._add_agent(step.workflow_id, step.agent_id, step.session_id, role)
        for pred in run.step(step.agent_id, role):
            self._count_end(run, pred)
            self.graph.observe_transition(run.roles[pred], role)
        self.pace.observe_step(step.workflow_id, self.kv.access_clock())
        steps, role_steps = self._push_learned(run)
        return {"workflow_id": step.workflow_id, "learned": True, "steps_to_execution": steps,
                "role_steps_to_execution": role_steps}

    def _count_end(self, run: LearnedRun, agent_id: str) -> None:
        if agent_id not in run.counted:
            run.counted.add(agent_id)
            self.graph.observe_completion(run.roles[agent_id])

    def tool_started(self, session_id: str) -> None:
        """A tool call of `session_id` started: an undeclared agent whose turn end was taken for
        its run's end runs on (a tool call recognised in the answer comes after the turn ended)."""
        for wf_id, agent_id in list(self.session_roles.get(session_id, ())):
            run = self.learned.get(wf_id)
            if run is not None and run.reopen(agent_id):
                self._push_learned(run)
        ended = self.ended_by_turn.pop(session_id, None)
        if ended is None:
            return
        wf_id, agent_id, definition, workflow, when = ended
        if self.clock() - when > REOPEN_GRACE_S or wf_id in self.workflows or wf_id in self.learned:
            return
        # A declared workflow's last agent took its turn's end for the workflow's: it runs on.
        workflow.ended = False
        workflow.sinks_done.discard(agent_id)
        self._register(workflow, definition)
        self._push(workflow)

    def _push_learned(self, run: LearnedRun) -> tuple[dict, dict]:
        steps, role_steps = run.steps_to_execution(self.graph)
        wf_id = run.workflow_id
        self.steps[wf_id] = steps
        self.last_active[wf_id] = self.clock()
        roles = {run.roles[a] for a in run.agents} | set(self.predicted.get(wf_id, ())) | set(role_steps)
        self._set_predicted(wf_id, role_steps)
        self._push_sessions({self.agent_sessions[(wf_id, a)] for a in run.agents})
        self._push_roles(roles)
        self._push_learned_critical(run, role_steps)
        return steps, role_steps

    def _set_predicted(self, wf_id: str, role_steps: dict[str, int]) -> None:
        for role in self.predicted.pop(wf_id, {}):
            members = self.predicted_by_role.get(role)
            if members is not None:
                members.discard(wf_id)
                if not members:
                    del self.predicted_by_role[role]
        if role_steps:
            self.predicted[wf_id] = dict(role_steps)
            for role in role_steps:
                self.predicted_by_role.setdefault(role, set()).add(wf_id)

    def turn_recorded(self, session_id: str) -> None:
        """A workflow agent's turn is in the tree: its role's prefix is the part it shares with the
        role's previous session (another instance's), which then carries the role's steps."""
        roles = {self.role_of[r] for r in self.session_roles.get(session_id, ())}
        moved = set()
        for role in roles:
            key = ROLE_PREFIX + role
            previous = self.role_last_session.get(role)
            node = None
            if previous is not None and previous != session_id:
                node = self.kv.common_prefix_node(session_id, previous)  # another instance's
            if node is None and self.kv.last_node(key) is None:
                # The first of the role, or the previous one's path and the role's prefix were both
                # evicted: its whole path, for now.
                last = self.kv.last_node(session_id)
                node = None if last is None else last.id
            self.role_last_session[role] = session_id
            self.role_last_session.move_to_end(role)
            if node is not None:
                self.kv.set_session_steps({key: None})  # its old path no longer counts
                self.kv.record_turn(key, node)
                moved.add(role)
        while len(self.role_last_session) > MAX_ROLES_REMEMBERED:
            role, _ = self.role_last_session.popitem(last=False)
            self.kv.forget_session(ROLE_PREFIX + role)
        if moved:
            self._push_roles(moved)  # the steps did not change; the prefix that carries them did

    def turn_ended(self, session_id: str) -> None:
        """A turn of `session_id` finished with no tool call to follow: a workflow whose last agent
        that was is over, and none of its prefixes is needed again by it."""
        for wf_id, agent_id in list(self.session_roles.get(session_id, ())):
            run = self.learned.get(wf_id)
            if run is not None:
                if run.end_run(agent_id):
                    if run.finished(self.graph):
                        self._forget(run)  # the graph is sure nothing follows
                    else:
                        self._push_learned(run)
                continue
            workflow = self.workflows[wf_id]
            if workflow.turn_ended(agent_id):
                workflow.end()
                definition = self.definitions[wf_id]
                self._forget(workflow)
                self.ended_by_turn[session_id] = (wf_id, agent_id, definition, workflow, self.clock())
                while len(self.ended_by_turn) > MAX_ENDED_WORKFLOWS_REMEMBERED:
                    self.ended_by_turn.popitem(last=False)

    def session_gone(self, session_id: str) -> None:
        """The session was closed or forgotten: a workflow none of whose sessions is left ends."""
        for wf_id, _ in list(self.session_roles.get(session_id, ())):
            workflow = self.workflows.get(wf_id) or self.learned.get(wf_id)
            if workflow is None:
                continue
            others = [self.agent_sessions[(wf_id, a)] for a in workflow.agents]
            if all(s == session_id or not self.session_exists(s) for s in others):
                if isinstance(workflow, Workflow):
                    workflow.end()
                self._forget(workflow)

    def forget_idle(self, now: float, idle_s: float) -> int:
        """Workflows with no step for `idle_s` and no live session are dropped (bounded state)."""
        live = {**self.workflows, **self.learned}
        stale = [wf_id for wf_id, t in self.last_active.items() if now - t > idle_s and not any(
            self.session_exists(self.agent_sessions[(wf_id, a)]) for a in live[wf_id].agents)]
        for wf_id in stale:
            self._forget(live[wf_id])
        return len(stale)

    # ---- internals -----------------------------------------------------------------------------
    def _push(self, workflow: Workflow) -> dict[str, Optional[int]]:
        """Give the cache the new steps of this workflow's agent sessions."""
        steps = workflow.steps_to_execution()
        self.steps[workflow.workflow_id] = steps
        self.last_active[workflow.workflow_id] = self.clock()
        sessions = {self.agent_sessions[(workflow.workflow_id, agent)] for agent in workflow.agents}
        self._push_sessions(sessions)
        self._push_roles({self.role_of[(workflow.workflow_id, a)] for a in workflow.agents})
        self._push_critical(workflow, steps)
        return steps

    # ---- the critical path (reservation) ---------------------------------------------------------
    def _push_critical(self, workflow: Workflow, steps: dict[str, Optional[int]]) -> None:
        if self.reservation is None or not self.reservation.enabled:
            return
        wf_id = workflow.workflow_id
        successors = (schedule_successors(workflow.schedule, workflow.position) if workflow.schedule
                      else workflow.edges)
        # Protected are the critical agents due within the eviction horizon (further ones keep
        # KVFlow's steps order with everything else).
        critical = [a for a in critical_agents(workflow.agents, successors, steps) if steps[a] <= HORIZON_STEPS]
        keys = set()
        for agent in critical:
            keys.add(self.agent_sessions[(wf_id, agent)])
            keys.add(ROLE_PREFIX + self.role_of[(wf_id, agent)])
        frontier = frozenset(self.agent_sessions[(wf_id, a)] for a in critical if steps[a] <= 1)
        self.reservation.set_path(wf_id, CriticalPath(frozenset(keys), frontier))

    def _push_learned_critical(self, run: LearnedRun, role_steps: dict[str, int]) -> None:
        """A learned instance's critical path runs over the roles the trusted graph predicts, from
        its running agents; a role not run yet in this instance is protected by its role prefix."""
        if self.reservation is None or not self.reservation.enabled:
            return
        roles = tuple(sorted(role_steps))
        successors = {r: tuple(s for s in self.graph.successors(r) if s in role_steps) for r in roles}
        critical = [r for r in critical_agents(roles, successors, dict(role_steps)) if role_steps[r] <= HORIZON_STEPS]
        by_role = {}
        for agent in sorted(run.agents):
            by_role.setdefault(run.roles[agent], self.agent_sessions[(run.workflow_id, agent)])
        keys = {ROLE_PREFIX + role for role in critical} | {by_role[r] for r in critical if r in by_role}
        frontier = frozenset(by_role[r] for r in critical if r in by_role and role_steps[r] <= 1)
        self.reservation.set_path(run.workflow_id, CriticalPath(frozenset(keys), frontier))

    def _push_roles(self, roles) -> None:
        """Each role's prefix needs the soonest steps of that role over the live workflows (None:
        no live workflow has the role, an ordinary prefix again)."""
        soonest = {}
        for role in sorted(roles):  # a fixed order: prefetches queue on the link in this order
            values = [self.steps[wf_id][agent] for wf_id, agent in self.role_members.get(role, ())]
            values += [self.predicted[wf_id][role] for wf_id in self.predicted_by_role.get(role, ())]
            soonest[role] = min((v for v in values if v is not None), default=None)
        # A role due now or next finds its prompt on the GPU, whichever instance runs it.
        self._set_steps({ROLE_PREFIX + r: v for r, v in soonest.items() if r in self.role_last_session})

    def _push_sessions(self, sessions) -> None:
        """A session serving in several live workflows is needed as soon as the soonest needs it; one
        no live workflow needs again ranks last (KVFlow: evicted first); one in no workflow any more
        is an ordinary node again (None: upstream's LRU order)."""
        per_session: dict[str, Optional[int]] = {}
        for session_id in sorted(sessions):
            roles = self.session_roles.get(session_id)
            if not roles:
                per_session[session_id] = None
                continue
            # A learned workflow's None is "not sure" (it does not count); a declared one's "never again".
            values = [self.steps[wf][a] for wf, a in roles if not (wf in self.learned and self.steps[wf][a] is None)]
            known = [v for v in values if v is not None]
            per_session[session_id] = min(known) if known else (NEVER_AGAIN if values else None)
        self._set_steps(per_session)

    def _set_steps(self, steps: dict[str, Optional[int]]) -> None:
        """Each key's steps-to-execution go to the tree's eviction order; with a host tier, the keys
        due now or next (an agent's session, a role's prefix) are prefetched to the GPU (KVFlow)."""
        self.kv.set_session_steps(steps)
        if self.host_tier is not None:
            for key, value in steps.items():
                if value is not None and value <= 1:
                    self.host_tier.prefetch_prefix(key)

    def _forget(self, workflow) -> None:
        """An ended workflow leaves no state behind but its id (for a clear 409; a learned one not
        even that: the server only guessed it ended, a later step starts it anew)."""
        wf_id = workflow.workflow_id
        run = self.learned.pop(wf_id, None)
        learned = run is not None
        if learned:
            for agent in run.uncounted_ends():
                self._count_end(run, agent)  # runs nothing followed: evidence of a last role
        else:
            del self.workflows[wf_id]
        self.definitions.pop(wf_id, None)
        predicted = set(self.predicted.get(wf_id, ()))
        self._set_predicted(wf_id, {})
        self.steps.pop(wf_id, None)
        self.last_active.pop(wf_id, None)
        self.pace.forget(wf_id)
        if self.reservation is not None:
            self.reservation.set_path(wf_id, None)
        sessions, roles = set(), set()
        for agent in workflow.agents:
            session_id, role = self._remove_agent(wf_id, agent)
            sessions.add(session_id)
            roles.add(role)
        self._push_sessions(sessions)
        self._push_roles(roles | predicted)
        if learned:
            return
        self.ended[wf_id] = None
        while len(self.ended) > MAX_ENDED_WORKFLOWS_REMEMBERED:
            self.ended.popitem(last=False)
