"""AgentController: the session state machine behind the hint API.

It turns hints (bind a request to a session, tool_start, tool_end, close) into cache actions
(record a turn's path, pin it with a TTL, release it) using the pure policies. It imports no
server code and takes an injected clock, so the scheduler and the eval simulator drive the
same object."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from sglang_agent.config import AgentServerArgs
from sglang_agent.policy import Clock
from sglang_agent.policy.pins import plan_pin
from sglang_agent.policy.temporal import OFFLOAD, decide_placement
from sglang_agent.policy.ttl import EvictionCost, ToolDurationModel, choose_ttl, memory_cost_rate
from sglang_agent.policy.workflow import UnknownAgentError, Workflow, WorkflowError
from sglang_agent.server.hints import HintError, InlineAgentHint, ToolStart, WorkflowDef, WorkflowStep

if TYPE_CHECKING:
    from sglang_agent.cache.agent_radix_cache import AgentRadixCache


MAX_ENDED_WORKFLOWS_REMEMBERED = 4096


@dataclass(frozen=True)
class LoadSnapshot:
    """What the scheduler's queue looks like when a pin is priced."""

    waiting_requests: int = 0
    waiting_tokens: int = 0


class HostTier(Protocol):
    """Where an idle session's KV can wait during a long tool call (TokenCake): SGLang's HiCache
    in the server (cache/host_tier.py), a model of it in the simulator (eval/sim/host_tier.py)."""

    def reload_s(self, tokens: int) -> float: ...
    def has_room(self, tokens: int) -> bool: ...
    def offload(self, session_id: str, tokens: int, keep_s: float, prefetch_after_s: float) -> None: ...
    # The tool returned (tool_end), or the next turn arrived (turn_arrived): reload now.
    def prefetch_now(self, session_id: str, turn_arrived: bool = False) -> None: ...
    def forget(self, session_id: str) -> None: ...
    # KVFlow: a workflow agent runs next; reload its host-only prefix now. Returns tokens queued.
    def prefetch_prefix(self, session_id: str) -> int: ...


@dataclass
class ToolCall:
    tool_name: str
    started_at: float
    expected_duration_s: Optional[float]
    ttl_s: float = 0.0


@dataclass
class AgentSession:
    session_id: str
    program_arrival: float  # first arrival of the program (program-level FCFS key)
    running_rids: set[str] = field(default_factory=set)
    tool: Optional[ToolCall] = None
    pending_tool: Optional[ToolStart] = None  # declared inline; starts when the turn ends
    resuming: bool = False  # the next turn follows a tool call
    turns: int = 0
    last_prompt_tokens: int = 0  # prompt length of the latest finished turn


@dataclass
class AgentStats:
    tool_calls: int = 0
    pins_created: int = 0
    pins_refused: int = 0
    pins_displaced: int = 0
    pins_expired_before_tool_end: int = 0
    offloads: int = 0
    offloaded_tokens: int = 0
    resumed_turns: int = 0
    resumed_turns_with_hit: int = 0
    resumed_cached_tokens: int = 0
    resumed_prompt_tokens: int = 0


class AgentController:
    def __init__(
        self,
        cache: "AgentRadixCache",
        args: AgentServerArgs,
        clock: Clock,
        load_probe: Callable[[], LoadSnapshot] = LoadSnapshot,
        host_tier: Optional[HostTier] = None,
    ):
        self.cache = cache
        self.host_tier = host_tier
        self.args = args
        self.clock = clock
        self.load_probe = load_probe
        self.durations = ToolDurationModel(prior_s=args.tool_prior_s)
        self.sessions: dict[str, AgentSession] = {}
        self.rid_to_session: dict[str, str] = {}
        self.workflows: dict[str, Workflow] = {}
        # (workflow id, agent id) -> session whose cached turns are that agent's prefix
        self.agent_sessions: dict[tuple[str, str], str] = {}
        # session -> the (workflow id, agent id) roles it serves (the reverse of agent_sessions)
        self.session_roles: dict[str, set[tuple[str, str]]] = {}
        # Ids of ended workflows (forgotten, bounded): a later step gets 409 "ended", not 404.
        self.ended_workflows: OrderedDict[str, None] = OrderedDict()
        self.stats = AgentStats()
        cache.turn_listeners.append(self.on_turn_finished)

    # ---- hints ---------------------------------------------------------------------------
    def bind(self, rid: str, hint: InlineAgentHint) -> dict:
        """A request of `hint.session_id` arrives (sent before the request itself)."""
        now = self.clock()
        if rid in self.rid_to_session:
            raise HintError(409, f"request id {rid!r} is already bound to a session")
        if hint.workflow_step is not None:
            self.workflow_step(hint.workflow_step)  # validated before anything changes
        session = self.sessions.get(hint.session_id)
        if session is None:
            session = self.sessions[hint.session_id] = AgentSession(hint.session_id, program_arrival=now)
        else:
            if session.tool is not None:
                # The next turn arriving is the tool's return, stated or not.
                self._finish_tool(session, now)
            if self.host_tier is not None:
                self.host_tier.prefetch_now(hint.session_id, turn_arrived=True)
        session.running_rids.add(rid)
        session.pending_tool = hint.tool_start
        self.rid_to_session[rid] = hint.session_id
        return {"session_id": hint.session_id, "rid": rid, "program_arrival": session.program_arrival}

    def unbind(self, rid: str) -> dict:
        """A bound request was refused before it ran (SGLang answered it with an error): forget
        it, and the session too if this request created it. Idempotent."""
        session_id = self.rid_to_session.pop(rid, None)
        session = self.sessions.get(session_id) if session_id is not None else None
        if session is None:
            return {"rid": rid, "unbound": False}
        session.running_rids.discard(rid)
        if not session.running_rids:
            session.pending_tool = None  # the refused turn never ended in its tool call
            if session.turns == 0 and session.tool is None:
                self.close(session_id)
        return {"rid": rid, "unbound": True, "session_id": session_id}

    def tool_start(self, hint: ToolStart) -> dict:
        session = self._session(hint.session_id)
        if session.tool is not None:
            raise HintError(409, f"session {hint.session_id!r} already has tool {session.tool.tool_name!r} running")
        if session.running_rids:
            # The turn is still generating: the pin starts when it ends.
            session.pending_tool = hint
            return {"session_id": hint.session_id, "deferred": True, "ttl_s": None}
        return self._start_tool(session, hint)

    def tool_end(self, session_id: str) -> dict:
        session = self._session(session_id)
        if session.tool is None:
            raise HintError(409, f"session {session_id!r} has no tool call in progress (tool_end without tool_start)")
        answer = self._finish_tool(session, self.clock())
        if self.host_tier is not None:
            self.host_tier.prefetch_now(session_id)  # an early return reloads an offloaded session at once
        return answer

    def close(self, session_id: str) -> dict:
        session = self._session(session_id)
        self.cache.close_agent_session(session_id)
        if self.host_tier is not None:
            self.host_tier.forget(session_id)
        for rid in session.running_rids:
            self.rid_to_session.pop(rid, None)
        del self.sessions[session_id]
        return {"session_id": session_id, "closed": True}

    def declare_workflow(self, definition: WorkflowDef) -> dict:
        if definition.workflow_id in self.workflows:
            raise HintError(409, f"workflow {definition.workflow_id!r} is already declared")
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
        self.workflows[definition.workflow_id] = workflow
        self.ended_workflows.pop(definition.workflow_id, None)
        for agent in definition.agents:
            role = (definition.workflow_id, agent.agent_id)
            self.agent_sessions[role] = agent.session_id
            self.session_roles.setdefault(agent.session_id, set()).add(role)
        return {"workflow_id": definition.workflow_id, "steps_to_execution": self._push_steps(workflow)}

    def workflow_step(self, step: WorkflowStep) -> dict:
        workflow = self.workflows.get(step.workflow_id)
        if workflow is None and step.workflow_id in self.ended_workflows:
            raise HintError(409, f"workflow {step.workflow_id!r} has ended")
        if workflow is None:
            raise HintError(404, f"unknown workflow {step.workflow_id!r}: declare it with POST /agent/workflow")
        try:
            workflow.advance(step.agent_id)
        except UnknownAgentError as e:
            raise HintError(404, str(e)) from None
        except WorkflowError as e:
            raise HintError(409, str(e)) from None
        return {"workflow_id": step.workflow_id, "steps_to_execution": self._push_steps(workflow)}

    def _push_steps(self, workflow: Workflow) -> dict[str, Optional[int]]:
        """Give the cache the new steps of this workflow's agent sessions; a session that serves
        in several workflows is needed as soon as the soonest of them needs it."""
        steps = workflow.steps_to_execution()
        per_session: dict[str, Optional[int]] = {}
        for agent in workflow.agents:
            session_id = self.agent_sessions[(workflow.workflow_id, agent)]
            values = [steps[a] if wf == workflow.workflow_id else self.workflows[wf].steps_to_execution()[a]
                      for wf, a in self.session_roles[session_id]]
            per_session[session_id] = min((v for v in values if v is not None), default=None)
        self.cache.set_session_steps(per_session)
        if self.host_tier is not None:
            # The agents due now or next should find their prefixes on the GPU (KVFlow prefetch).
            for session_id, value in per_session.items():
                if value is not None and value <= 1:
                    self.host_tier.prefetch_prefix(session_id)
        return steps

    def snapshot(self) -> dict:
        now = self.clock()
        live = self.cache.live_pin_sessions(now)
        return {
            "sessions": len(self.sessions),
            "sessions_in_tool_call": sum(1 for s in self.sessions.values() if s.tool is not None),
            "pinned_tokens": self.cache.pinned_tokens(now),
            "pins": len(live),
            "pin_cap_tokens": self._cap_tokens(),
            "workflows": len(self.workflows),
            **vars(self.stats),
            "hit_rate_after_tool_calls": (
                self.stats.resumed_turns_with_hit / self.stats.resumed_turns if self.stats.resumed_turns else None
            ),
            **self._host_tier_snapshot(),
        }

    def _host_tier_snapshot(self) -> dict:
        snapshot = getattr(self.host_tier, "snapshot", None)
        return {"host_tier": None} if snapshot is None else snapshot()

    def program_arrival(self, rid: str) -> Optional[float]:
        session_id = self.rid_to_session.get(rid)
        return None if session_id is None else self.sessions[session_id].program_arrival

    # ---- scheduler events ----------------------------------------------------------------
    def on_turn_finished(self, req, checkpointed: bool) -> None:
        session_id = self.rid_to_session.pop(req.rid, None)
        session = self.sessions.get(session_id) if session_id is not None else None
        if session is None:
            return
        session.running_rids.discard(req.rid)
        session.turns += 1
        prompt_tokens = len(req.origin_input_ids)
        if session.resuming:
            session.resuming = False
            self.stats.resumed_turns += 1
            cached = int(getattr(req, "cached_tokens", 0) or 0)
            self.stats.resumed_cached_tokens += cached
            self.stats.resumed_prompt_tokens += prompt_tokens
            # A hit: the previous turn's prompt was still cached (all but the token where the
            # new turn's text joins it, which re-tokenizes).
            self.stats.resumed_turns_with_hit += cached >= session.last_prompt_tokens - 1
        session.last_prompt_tokens = prompt_tokens
        # The resumed turn has consumed its pin (its prefix was locked while it ran): release it
        # now, so a finished program never holds memory until its TTL runs out.
        self.cache.unpin_session(session.session_id)
        last_node = getattr(req, "last_node", None)  # unset when the request never reached the tree
        if checkpointed and last_node is not None:
            self.cache.record_turn(session.session_id, last_node)
        if session.pending_tool is not None and not session.running_rids:
            hint, session.pending_tool = session.pending_tool, None
            self._start_tool(session, hint)
        elif not session.running_rids and session.tool is None:
            self._end_finished_workflows(session.session_id)

    def _end_finished_workflows(self, session_id: str) -> None:
        """A turn of the last agent of a workflow finished with no tool call to follow: the
        workflow is over and none of its prefixes is needed again by it."""
        for wf_id, agent_id in list(self.session_roles.get(session_id, ())):
            workflow = self.workflows[wf_id]
            if workflow.current == agent_id and workflow.at_last_step:
                workflow.end()
                self._push_steps(workflow)
                self._forget_workflow(workflow)

    def _forget_workflow(self, workflow: Workflow) -> None:
        """An ended workflow leaves no state behind but its id (for a clear 409)."""
        del self.workflows[workflow.workflow_id]
        for agent in workflow.agents:
            role = (workflow.workflow_id, agent)
            session_id = self.agent_sessions.pop(role)
            roles = self.session_roles[session_id]
            roles.discard(role)
            if not roles:
                del self.session_roles[session_id]
        self.ended_workflows[workflow.workflow_id] = None
        while len(self.ended_workflows) > MAX_ENDED_WORKFLOWS_REMEMBERED:
            self.ended_workflows.popitem(last=False)

    # ---- internals -----------------------------------------------------------------------
    def _session(self, session_id: str) -> AgentSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise HintError(404, f"unknown session {session_id!r}: send a request with agent.session_id first")
        return session

    def _cap_tokens(self) -> int:
        return int(self.args.max_pinned_fraction * self.cache.pool_size_tokens())

    def _start_tool(self, session: AgentSession, hint: ToolStart) -> dict:
        now = self.clock()
        self.stats.tool_calls += 1
        session.resuming = True
        decision, samples, cost, path_tokens = self._choose_ttl(session.session_id, hint)
        tool = ToolCall(hint.tool_name, now, hint.expected_duration_s)
        session.tool = tool
        body = {
            "session_id": session.session_id,
            "tool_name": hint.tool_name,
            "ttl_s": 0.0,
            "pinned_tokens": 0,
            "expected_benefit_s": decision.expected_benefit_s,
            "expected_cost_s": decision.expected_cost_s,
            "p_return_within_ttl": decision.p_return_within_ttl,
            "reason": decision.reason,
            "action": "drop" if decision.ttl_s <= 0 else "pin",
        }
        if self.host_tier is not None and path_tokens > 0:
            placement = decide_placement(samples, cost, decision, self.host_tier.has_room(path_tokens), self.args.max_ttl_s)
            if placement.action == OFFLOAD:
                self.host_tier.offload(session.session_id, path_tokens, placement.ttl_s, placement.prefetch_after_s)
                self.stats.offloads += 1
                self.stats.offloaded_tokens += path_tokens
                return {**body, "action": OFFLOAD, "offloaded_tokens": path_tokens,
                        "prefetch_after_s": placement.prefetch_after_s, "reason": placement.reason}
        if decision.ttl_s <= 0:
            self.stats.pins_refused += 1
            return body
        deadline = now + decision.ttl_s
        new_tokens = self.cache.unpinned_path_tokens(session.session_id, now)
        pinned_tokens = self.cache.pinned_tokens(now)
        cap = self._cap_tokens()
        holdings = []
        if pinned_tokens + new_tokens > cap:  # only then does the plan look at other pins
            holdings = [h for h in self.cache.pin_holdings(now) if h.session_id != session.session_id]
        budget = plan_pin(new_tokens, pinned_tokens, cap, holdings, new_deadline=deadline)
        if not budget.admit:
            self.stats.pins_refused += 1
            return {**body, "reason": budget.reason}
        for displaced in budget.release:
            self.cache.unpin_session(displaced)
        self.stats.pins_displaced += len(budget.release)
        tool.ttl_s = decision.ttl_s
        pinned = self.cache.pin_session(session.session_id, deadline)
        self.stats.pins_created += 1
        return {**body, "ttl_s": decision.ttl_s, "ttl_deadline": deadline, "pinned_tokens": pinned,
                "displaced_sessions": list(budget.release)}

    def _choose_ttl(self, session_id: str, hint: ToolStart):
        path_tokens = self.cache.session_path_tokens(session_id)
        load = self.load_probe()
        pool = max(1, self.cache.pool_size_tokens())
        cost = EvictionCost(
            recompute_s=path_tokens / self.args.prefill_tokens_per_s,
            # Without a host tier a lost prefix is recomputed.
            reload_s=None if self.host_tier is None else self.host_tier.reload_s(path_tokens),
            queue_delay_s=load.waiting_tokens / self.args.prefill_tokens_per_s,
        )
        rate = memory_cost_rate(path_tokens / pool, load.waiting_requests, self.args.memory_cost_scale)
        samples = self.durations.samples(hint.tool_name, hint.expected_duration_s)
        return choose_ttl(samples, cost, rate, self.args.max_ttl_s), samples, cost, path_tokens

    def _finish_tool(self, session: AgentSession, now: float) -> dict:
        tool = session.tool
        assert tool is not None
        duration = now - tool.started_at
        self.durations.observe(tool.tool_name, duration)
        lost = tool.ttl_s > 0 and duration > tool.ttl_s
        self.stats.pins_expired_before_tool_end += lost
        session.tool = None
        # Keep the pin a short grace so the next turn finds its prefix; it never outlives the TTL.
        remaining = 0.0
        if tool.ttl_s > 0 and not lost:
            deadline = min(tool.started_at + tool.ttl_s, now + self.args.resume_grace_s)
            self.cache.set_pin_deadline(session.session_id, deadline)
            remaining = max(0.0, deadline - now)
        else:
            self.cache.unpin_session(session.session_id)
        return {
            "session_id": session.session_id,
            "tool_name": tool.tool_name,
            "tool_duration_s": duration,
            "pin_expired_before_return": bool(lost),
            "pin_remaining_s": remaining if math.isfinite(remaining) else 0.0,
        }
