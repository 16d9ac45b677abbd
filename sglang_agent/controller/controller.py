"""AgentController: the session state machine behind the hint API.

Hints (a request names its session, tool_start, tool_end, close), scheduler events (a request
finished or left without finishing) and the step clock (pins and host copies lapse, idle sessions
are forgotten) are events of the table in policy/session_machine.py; the controller runs the
action the table names, with the pure policies deciding TTLs, pins and offloads. It reaches the KV
cache, the host tier and the scheduler's load only through the protocols in ports.py, and reads
time only from its injected clock, so the server and the simulator drive the same object."""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict
from typing import Callable, Optional

from sglang_agent.config import AgentServerArgs
from sglang_agent.controller.ports import HostTier, LoadProbe, LoadSnapshot, SessionKV
from sglang_agent.controller.reservation import CriticalReservation
from sglang_agent.controller.session import HOLD_NONE, HOLD_OFFLOAD, HOLD_PIN, AgentSession, AgentStats, ToolCall
from sglang_agent.controller.workflows import WorkflowRegistry
from sglang_agent.hints import HintError, InlineAgentHint, ToolStart, WorkflowDef, WorkflowStep
from sglang_agent.policy import Clock
from sglang_agent.policy.pins import plan_pin
from sglang_agent.policy.reservation import admits_other
from sglang_agent.policy.session_machine import Event, Go, Refuse, State, transition
from sglang_agent.policy.temporal import (
    KEEP, OFFLOAD, POOL_ABOVE_WATERMARK, REQUESTS_WAITING, decide_placement, memory_pressure,
)
from sglang_agent.policy.ttl import EvictionCost, ToolDurationModel, choose_ttl, memory_cost_rate
from sglang_agent.policy.learned_graph import TransitionGraph
from sglang_agent.policy.workflow import WorkflowPace

# At most this many sessions are looked at per step for idleness (the step stays small).
IDLE_SCAN_PER_STEP = 256
# Finished requests remembered for what the HTTP layer reports about their answers afterwards.
RECENT_TURNS = 8192
IMPLICIT_PREFIX = "~"  # implicit sessions (found by the server, no client key) are named "~<rid>"
WAITING = (State.IN_TOOL, State.LAPSED)  # an implicit session in these is resumed by its next prompt


class AgentController:
    def __init__(
        self,
        kv: SessionKV,
        args: AgentServerArgs,
        clock: Clock,
        load_probe: LoadProbe = LoadSnapshot,
        host_tier: Optional[HostTier] = None,
        pace: Optional[WorkflowPace] = None,
    ):
        self.kv = kv
        self.host_tier = host_tier
        self.args = args
        self.clock = clock
        self.load_probe = load_probe
        self.durations = ToolDurationModel(prior_s=args.tool_prior_s)
        self.sessions: dict[str, AgentSession] = {}
        self.rid_to_session: dict[str, str] = {}
        self.rids_in_scheduler: set[str] = set()  # bound requests the scheduler has received
        # Finished requests: rid -> its session (bound ones), rid -> (its path's last node, prompt
        # tokens, cached tokens) (unbound ones, when zero-hint detection is on). Bounded.
        self.recent_rids: OrderedDict[str, str] = OrderedDict()
        self.recent_unbound: OrderedDict[str, tuple] = OrderedDict()
        self.unbound_entered: OrderedDict[str, float] = OrderedDict()  # unbound rid -> when it entered
        self.by_activity: OrderedDict[str, None] = OrderedDict()  # sessions, least recently active first
        # Every request in the scheduler -> when it entered (step clock): how long it has waited.
        self.entered_at: dict[str, float] = {}
        self.reservation = CriticalReservation(kv, args.reserve_fraction)
        graph = (TransitionGraph(args.workflow_min_observations, args.workflow_min_probability)
                 if args.learn_workflows else None)
        self.workflows = WorkflowRegistry(kv, host_tier, pace or getattr(kv, "pace", None) or WorkflowPace(), clock,
                                          session_exists=self.sessions.__contains__, graph=graph,
                                          reservation=self.reservation)
        self.stats = AgentStats()
        self.state_counts = {state: 0 for state in State if state is not State.ABSENT}  # O(1) stats
        self._last_workflow_sweep = -math.inf

    # ---- the table -------------------------------------------------------------------------------
    def _outcome(self, session_id: str, event: Event, tool: str = "") -> Go:
        session = self.sessions.get(session_id)
        outcome = transition(session.state if session else State.ABSENT, event)
        if isinstance(outcome, Refuse):
            if not tool and session is not None:
                tool = (session.tool.tool_name if session.tool else
                        session.pending_tool.tool_name if session.pending_tool else "")
            raise HintError(outcome.status, outcome.reason.format(session=session_id, tool=tool))
        return outcome

    def _fire(self, session_id: str, event: Event, **context) -> dict:
        """Run one event: its action, then the table's next state (unless the action removed the
        session). A refusal raises HintError before anything changes."""
        outcome = self._outcome(session_id, event)
        result = getattr(self, f"_on_{outcome.action}")(session_id, **context) or {}
        session = self.sessions.get(session_id)
        if session is not None and outcome.state is not State.ABSENT:
            self._set_state(session, outcome.state)
            self._touch(session)
        return result

    def _set_state(self, session: AgentSession, state: State) -> None:
        self.state_counts[session.state] -= 1
        self.state_counts[state] += 1
        was_waiting, session.state = session.state in WAITING, state
        if session.implicit and was_waiting != (state in WAITING):
            # Waiting on a tool: the prompt that extends its path resumes it.
            if state in WAITING:
                self.kv.mark_resume_anchor(session.session_id, session.anchor_tokens)
            else:
                self.kv.unmark_resume_anchor(session.session_id)

    def _touch(self, session: AgentSession) -> None:
        session.last_active = self.clock()
        self.by_activity[session.session_id] = None
        self.by_activity.move_to_end(session.session_id)

    # ---- hints -----------------------------------------------------------------------------------
    def bind(self, rid: str, hint: InlineAgentHint) -> dict:
        """A request of `hint.session_id` is about to arrive (the hint is sent before it)."""
        if rid in self.rid_to_session:
            raise HintError(409, f"request id {rid!r} is already bound to a session")
        # Validate everything first: a refused bind changes nothing.
        after = self._outcome(hint.session_id, Event.BIND).state
        if hint.tool_start is not None and isinstance(transition(after, Event.TOOL_START), Refuse):
            self._outcome(hint.session_id, Event.TOOL_START, tool=hint.tool_start.tool_name)
        if hint.workflow_step is not None:
            self.workflows.check_step(hint.workflow_step)
            self.workflows.step(hint.workflow_step)
        self._fire(hint.session_id, Event.BIND, rid=rid)
        if hint.close_after_turn:
            self.sessions[hint.session_id].close_after_turn = True
        if self.host_tier is not None:
            self.host_tier.turn_arrived(hint.session_id)  # an offload job for it ends with this turn
        if hint.tool_start is not None:
            self._fire(hint.session_id, Event.TOOL_START, hint=hint.tool_start)
        session = self.sessions[hint.session_id]
        return {"session_id": hint.session_id, "rid": rid, "program_arrival": session.program_arrival}

    def tool_start(self, hint: ToolStart) -> dict:
        session = self.sessions.get(hint.session_id)
        if session is not None and session.tool is not None and session.tool.detected and not hint.detected:
            return self._fire(hint.session_id, Event.TOOL_RESTART, hint=hint)  # explicit hints win
        return self._fire(hint.session_id, Event.TOOL_START, hint=hint)

    def tool_end(self, session_id: str) -> dict:
        return self._fire(session_id, Event.TOOL_END)

    def close(self, session_id: str) -> dict:
        return self._fire(session_id, Event.CLOSE)

    def declare_workflow(self, definition: WorkflowDef) -> dict:
        return self.workflows.declare(definition)

    def workflow_step(self, step: WorkflowStep) -> dict:
        return self.workflows.step(step)

    # ---- requests (scheduler and HTTP events) ---------------------------------------------------
    def request_entered(self, rid: str, prompt=None) -> None:
        """The scheduler received the request (it now ends through turn_finished or request_dropped).
        An unbound one whose prompt extends an implicit session's cached path (the turn its tool
        call followed) is that session's resumed turn."""
        self.entered_at[rid] = self.clock()
        if rid not in self.rid_to_session and prompt is not None and self.kv.resume_anchor_count():
            session_id = self.kv.session_on_prefix(prompt)  # token ids, or the request as received
            if session_id is not None:
                self._fire(session_id, Event.BIND, rid=rid)
                if self.host_tier is not None:
                    self.host_tier.turn_arrived(session_id)
        if rid in self.rid_to_session:
            self.rids_in_scheduler.add(rid)
        elif self.args.detect_tool_calls:
            # Its conversation may become an implicit session: the program arrived with this turn.
            self._remember(self.unbound_entered, rid, self.clock())

    def turn_finished(self, req) -> None:
        """A request left the scheduler finished (`req`: SGLang's Req or the simulator's)."""
        self._left_scheduler(req.rid)
        if self.reservation.is_critical(self.rid_to_session.get(req.rid)) and not _aborted(req):
            new_tokens = len(req.origin_input_ids) - int(getattr(req, "cached_tokens", 0) or 0)
            self.reservation.observe_turn(new_tokens + len(getattr(req, "output_ids", None) or ()))
        if req.rid not in self.rid_to_session:
            entered = self.unbound_entered.pop(req.rid, None)
            last_node = getattr(req, "last_node", None)
            if last_node is not None and not _aborted(req):
                self._remember(self.recent_unbound, req.rid, (last_node, len(req.origin_input_ids),
                                                             int(getattr(req, "cached_tokens", 0) or 0), entered))
            return
        if _aborted(req):
            self._request_left(req.rid, None)
        else:
            self._request_left(req.rid, req)

    def request_dropped(self, rid: str) -> None:
        """A bound request left without finishing: aborted while queued, refused, or its client gone
        before the scheduler saw it. Idempotent."""
        self._left_scheduler(rid)
        if rid in self.rid_to_session:
            self._request_left(rid, None)
        self.unbound_entered.pop(rid, None)

    def _left_scheduler(self, rid: str) -> None:
        self.entered_at.pop(rid, None)
        self.reservation.request_left(rid)

    def unbind(self, rid: str) -> dict:
        """The HTTP layer saw SGLang refuse the bound request (status >= 400)."""
        known = rid in self.rid_to_session
        self.request_dropped(rid)
        return {"rid": rid, "unbound": known}

    def request_gone(self, rid: str) -> dict:
        """The HTTP exchange of a bound request is over. If the scheduler never received it, it
        never will: the turn is dropped (else the scheduler's own event ends it, or already did)."""
        if rid in self.rid_to_session and rid not in self.rids_in_scheduler:
            self._request_left(rid, None)
            return {"rid": rid, "dropped": True}
        return {"rid": rid, "dropped": False}

    def turn_outcome(self, rid: str, tools: list[str], cache_ttl_s: Optional[float], close: bool) -> dict:
        """What the HTTP layer saw in a finished turn's answer: the tools it called (recognised in
        the output, no client hint), a cache_control TTL, Continuum's is_last_step. The turn's
        session (bound, or, for an unbound request, an implicit one made now from the turn's path)
        starts that tool call as an explicit tool_start would; explicit hints already given win.
        With detection off only the client's own TTL counts."""
        if not self.args.detect_tool_calls:
            tools = []
        if not (tools or cache_ttl_s) and not close:
            self.recent_unbound.pop(rid, None)  # its outcome is known: nothing to open
            return {"rid": rid, "applied": False}
        session_id = self.recent_rids.get(rid)
        if session_id is None:
            if rid in self.rid_to_session:
                return {"rid": rid, "applied": False, "reason": "no finished turn of that request"}
            unbound = self.recent_unbound.pop(rid, None)
            if unbound is None or not (tools or cache_ttl_s):
                return {"rid": rid, "applied": False, "reason": "no finished turn of that request"}
            session_id = self._open_implicit(rid, *unbound)
        session = self.sessions.get(session_id)
        if session is None or session.state is not State.IDLE:
            return {"rid": rid, "session_id": session_id, "applied": False,
                    "reason": "the session already has what its hints said" if session else "session gone"}
        answer = {"rid": rid, "session_id": session_id, "applied": True}
        if tools or cache_ttl_s:
            name = "cache_control" if not tools else self._slowest(tools)
            answer["tool_start"] = self._fire(session_id, Event.TOOL_START, hint=ToolStart(
                session_id, name, None, ttl_s=cache_ttl_s, detected=True))
        if close:
            self._fire(session_id, Event.CLOSE)
        return answer

    def _open_implicit(self, rid: str, last_node, prompt_tokens: int, cached_tokens: int,
                       entered: Optional[float]) -> str:
        """The session of an unbound turn that ended in a tool call: the conversation is the session,
        its key the turn's own request id; the next prompt that extends its path resumes it. The
        program arrived with that turn (program-level FCFS orders its resumed turns by it)."""
        session_id = IMPLICIT_PREFIX + rid
        arrival = self.clock() if entered is None else entered
        session = AgentSession(session_id, program_arrival=arrival, implicit=True)
        session.turns, session.last_prompt_tokens = 1, prompt_tokens
        self.sessions[session_id] = session
        self.state_counts[State.IDLE] += 1
        self._touch(session)
        self.kv.record_turn(session_id, last_node)
        return session_id

    def _slowest(self, tools: list[str]) -> str:
        """Several calls in one turn: the tool whose durations run longest decides (median)."""
        named = [t for t in tools if t] or ["tool"]
        return max(named, key=lambda t: statistics.median(self.durations.samples(t)))

    @staticmethod
    def _remember(store: OrderedDict, key: str, value) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > RECENT_TURNS:
            store.popitem(last=False)

    def _request_left(self, rid: str, finished_req) -> None:
        session_id = self.rid_to_session.pop(rid)
        self.rids_in_scheduler.discard(rid)
        session = self.sessions[session_id]
        session.running_rids.discard(rid)
        # A pin kept for this turn (the resumed prefix, locked while the turn ran) is spent.
        self._release_pin(session_id)
        if finished_req is not None:
            self._count_turn(session, finished_req)
        else:
            self.stats.turns_dropped += 1
        if session.running_rids:
            self._touch(session)
            return
        if finished_req is not None:
            self._remember(self.recent_rids, rid, session_id)
            self._fire(session_id, Event.TURN_END)
            if session.close_after_turn and session_id in self.sessions:
                self._fire(session_id, Event.CLOSE)
        elif session.turns == 0 and not session.resuming:
            self._fire(session_id, Event.OPENING_DROPPED)
        else:
            self._fire(session_id, Event.TURN_DROPPED)

    def _count_turn(self, session: AgentSession, req) -> None:
        session.turns += 1
        prompt_tokens = len(req.origin_input_ids)
        if session.resuming:
            session.resuming = False
            cached = int(getattr(req, "cached_tokens", 0) or 0)
            self.stats.resumed_turns += 1
            self.stats.resumed_cached_tokens += cached
            self.stats.resumed_prompt_tokens += prompt_tokens
            # A hit: the previous turn's prompt was still cached (all but the token where the new
            # turn's text joins it, which re-tokenizes).
            self.stats.resumed_turns_with_hit += cached >= session.last_prompt_tokens - 1
            if session.resumed_from == HOLD_OFFLOAD:
                # A prefetch hit: the previous prompt was back on the GPU when the turn ran (not
                # loaded from host at its admission, nor recomputed).
                on_gpu = int(getattr(req, "cached_tokens_device", cached) or 0)
                hit = on_gpu >= session.last_prompt_tokens - 1
                self.stats.prefetch_hits += hit
                self.stats.prefetch_misses += not hit
        session.last_prompt_tokens = prompt_tokens
        last_node = getattr(req, "last_node", None)  # unset when the request never reached the tree
        if last_node is not None:
            self.kv.record_turn(session.session_id, last_node)
            self.workflows.turn_recorded(session.session_id)

    # ---- the step clock --------------------------------------------------------------------------
    def on_step(self) -> None:
        """Once per scheduler step (after the clock ticked): lapsed pins and host copies leave their
        tool state, the host tier's due copies run, idle sessions are forgotten."""
        now = self.clock()
        if self.reservation.enabled:
            pool = max(1, self.kv.pool_tokens())
            self.reservation.observe_step(1.0 - self.kv.free_tokens() / pool)
        for session_id in self.kv.expire_pins(now):
            self._hold_lapsed(session_id, HOLD_PIN)
        if self.host_tier is not None:
            events = self.host_tier.poll(now, self.speculative_headroom_tokens())
            for session_id in events.lapsed:
                self._hold_lapsed(session_id, HOLD_OFFLOAD)
            for session_id, until in events.reloaded.items():
                self._protect_reloaded(session_id, until)
        self._forget_idle(now)

    def _protect_reloaded(self, session_id: str, predicted_return: float) -> None:
        """A prefetched session is back on the GPU before its turn: keep it there (a pin, within the
        pin cap and the running requests' headroom, releasable like any pin) until the predicted
        return plus the resume grace, so other traffic cannot evict it again first."""
        session = self.sessions.get(session_id)
        if session is None:
            return
        if session.tool is not None and session.tool.hold == HOLD_OFFLOAD:
            deadline = predicted_return + self.args.resume_grace_s
        elif session.state is State.IDLE and session.resumed_from == HOLD_OFFLOAD:
            deadline = self.clock() + self.args.resume_grace_s  # tool_end came: the turn is due now
        else:
            return
        if deadline <= self.clock():
            return
        fits = self.args.pin_mode != "hard" or self.kv.protectable_tokens(session_id) <= self.speculative_headroom_tokens()
        cap = int(self.args.max_pinned_fraction * self.kv.pool_tokens())
        if fits and self.kv.pinned_tokens() + self.kv.unpinned_path_tokens(session_id) <= cap:
            self.stats.prefetches_protected += self.kv.pin(session_id, deadline) > 0

    def _hold_lapsed(self, session_id: str, hold: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.tool is not None and session.tool.hold == hold:
            self._fire(session_id, Event.HOLD_LAPSED)

    def _forget_idle(self, now: float) -> None:
        idle_s = self.args.session_idle_s
        for _ in range(min(IDLE_SCAN_PER_STEP, len(self.by_activity))):
            session_id = next(iter(self.by_activity))
            session = self.sessions.get(session_id)
            if session is None:
                del self.by_activity[session_id]
                continue
            if now - session.last_active < idle_s:
                break
            holds = session.state in (State.RUNNING, State.TOOL_PENDING) or (
                session.tool is not None and session.tool.hold != HOLD_NONE) or self.kv.pin_deadline(session_id)
            if holds:
                self._touch(session)  # not idle: the countdown starts when it lets go
                continue
            self._fire(session_id, Event.IDLE_TIMEOUT)
        if now - self._last_workflow_sweep >= min(idle_s, 1.0):
            self._last_workflow_sweep = now
            self.workflows.forget_idle(now, idle_s)

    # ---- memory the scheduler needs back ---------------------------------------------------------
    def headroom_tokens(self, load: Optional[LoadSnapshot] = None) -> int:
        """Device tokens a new pin or reload may take: free + evictable beyond what the running
        requests may still need."""
        load = self.load_probe() if load is None else load
        return self.kv.free_tokens() - load.decode_reserve_tokens

    def speculative_headroom_tokens(self, load: Optional[LoadSnapshot] = None) -> int:
        """Device tokens a guess about the future may take where a host tier makes losing it cheap
        (a prefetch ahead of a turn that is not here yet, the pin that keeps it until its turn, a
        pin over a tool call that an eviction would cost only a reload): the headroom beyond the
        waiting requests' prompts too. A waiting request is not a guess: before, reloads and pins
        took memory the queue was waiting for (multi-agent 0.4/s in the simulator, 8B: 113.9 s ->
        103.7 s avg JCT with this rule; `python -m eval.targets`)."""
        load = self.load_probe() if load is None else load
        return self.headroom_tokens(load) - load.waiting_tokens

    def release_pins(self, enough: Callable[[], bool], reason: str) -> list[str]:
        """Pins give way, closest to expiry first, until `enough()` (the running batch's next decode
        fits, or the head of the queue can be admitted). Returns the sessions released."""
        released = []
        while not enough():
            holding = next(self.kv.pins_soonest_first(), None)
            if holding is None:
                break
            self._release_pin(holding.session_id)
            released.append(holding.session_id)
        self.stats.pins_displaced += len(released)
        if reason == "decode":
            self.stats.pins_released_for_decode += len(released)
        elif reason == "stall":
            self.stats.pins_released_for_stalled_requests += len(released)
        else:
            self.stats.pins_released_for_admission += len(released)
        return released

    # ---- admission: waiting requests and what pins and the reservation may hold back ------------
    def waited_s(self, rid: str) -> float:
        entered = self.entered_at.get(rid)
        return 0.0 if entered is None else max(0.0, self.clock() - entered)

    def is_critical_request(self, rid: str) -> bool:
        """A request of an agent on a live workflow's critical path (reservation on)."""
        return self.reservation.is_critical(self.rid_to_session.get(rid))

    def queue_rank(self, rid: str) -> int:
        """Where the reservation puts a waiting request: 0 (ahead) for critical-path agents and for
        any request that has waited --agent-max-admission-stall-s (a critical agent may overtake
        others only that long), 1 for the rest; each rank keeps the scheduler's own order."""
        if self.is_critical_request(rid) or self.waited_s(rid) >= self.args.max_admission_stall_s:
            return 0
        return 1

    def begin_admission_round(self, waiting_critical_need_tokens: int) -> int:
        """An admission round starts with critical requests needing `waiting_critical_need_tokens`
        in the queue. A critical agent whose tool is predicted to return within
        --agent-max-admission-stall-s counts too, with the turn estimate (its turn is about to
        arrive). Returns the tokens held from other requests (0: the whole share is lent out)."""
        if not self.reservation.enabled:
            return 0
        need = waiting_critical_need_tokens
        horizon = self.clock() + self.args.max_admission_stall_s
        for path in self.reservation.paths.values():
            for session_id in path.next_sessions:
                session = self.sessions.get(session_id)
                if session is not None and session.tool is not None and self._predicted_return(session) <= horizon:
                    need += int(self.reservation.turn_tokens_estimate)
        return self.reservation.begin_round(need)

    def _predicted_return(self, session: AgentSession) -> float:
        """When the session's tool is expected back: its declared duration, else the median of the
        tool's observed ones."""
        tool = session.tool
        if tool.expected_duration_s is not None:
            return tool.started_at + tool.expected_duration_s
        return tool.started_at + statistics.median(self.durations.samples(tool.tool_name))

    def may_admit(self, rid: str, need_tokens: int, room_tokens: int) -> bool:
        """May this request take `need_tokens` of the `room_tokens` the scheduler has? Critical ones
        always (they draw on the reservation first); others only beyond what is held for critical
        agents, and never after waiting --agent-max-admission-stall-s (the reservation may not stall
        anyone longer than that)."""
        held = self.reservation.held
        if held <= 0 or self.is_critical_request(rid):
            return True
        if self.waited_s(rid) >= self.args.max_admission_stall_s or admits_other(need_tokens, room_tokens, held):
            return True
        self.reservation.held_back(rid)
        return False

    def admitted(self, rid: str, tokens: int) -> None:
        """A critical request got its memory: that much of what was held is spent."""
        if self.is_critical_request(rid):
            self.reservation.held = max(0, self.reservation.held - tokens)

    def unblock_stalled_head(self, rid: str, need_tokens: int, reserve_tokens: int) -> list[str]:
        """The head of the queue could not be admitted. If it is another tenant's (no agent session)
        and has waited --agent-max-admission-stall-s, pins give way (closest to expiry first) if
        they are what stands in its way: it fits in free + evictable + pinned memory beyond
        `reserve_tokens` (what the running batch may still need, as the scheduler's own admission
        counts it). Upstream would have evicted that memory for it; a pin delays other tenants at
        most that long. An agent session's turn waits for older programs' pins until their TTL
        (Continuum: program-level FCFS, the pin's price counts that queueing)."""
        if rid in self.rid_to_session or self.waited_s(rid) < self.args.max_admission_stall_s:
            return []
        room = self.kv.free_tokens() - reserve_tokens
        if room >= need_tokens or room + self.kv.pinned_tokens() < need_tokens:
            return []  # not the pins: it fits already, or running requests hold the memory
        return self.release_pins(lambda: self.kv.free_tokens() - reserve_tokens >= need_tokens, "stall")

    def _release_pin(self, session_id: str) -> None:
        if self.kv.pin_deadline(session_id) is None:
            return
        self.kv.unpin(session_id)
        session = self.sessions.get(session_id)
        if session is not None and session.tool is not None and session.tool.hold == HOLD_PIN:
            session.tool.hold = HOLD_NONE

    def on_cache_reset(self) -> None:
        """The tree was flushed (SGLang's /flush_cache): every pin, path and host copy is gone."""
        for session in self.sessions.values():
            if session.tool is not None:
                session.tool.hold = HOLD_NONE
            if self.host_tier is not None:
                self.host_tier.forget(session.session_id)

    # ---- actions (named by the table) ------------------------------------------------------------
    def _on_none(self, session_id: str, **_) -> None:
        return None

    def _on_open(self, session_id: str, rid: str) -> None:
        self.sessions[session_id] = AgentSession(session_id, program_arrival=self.clock())
        self.state_counts[State.IDLE] += 1
        self._on_add_request(session_id, rid)

    def _on_begin_turn(self, session_id: str, rid: str) -> None:
        self._on_add_request(session_id, rid)

    def _on_add_request(self, session_id: str, rid: str) -> None:
        self.sessions[session_id].running_rids.add(rid)
        self.rid_to_session[rid] = session_id

    def _on_resume(self, session_id: str, rid: str) -> None:
        session = self.sessions[session_id]
        self._finish_tool(session)
        self._on_add_request(session_id, rid)

    def _on_defer_tool(self, session_id: str, hint: ToolStart) -> dict:
        self.sessions[session_id].pending_tool = hint
        return {"session_id": session_id, "deferred": True, "ttl_s": None}

    def _on_start_pending_tool(self, session_id: str) -> None:
        session = self.sessions[session_id]
        hint, session.pending_tool = session.pending_tool, None
        self._start_tool(session, hint)

    def _on_start_tool(self, session_id: str, hint: ToolStart) -> dict:
        return self._start_tool(self.sessions[session_id], hint)

    def _on_restart_tool(self, session_id: str, hint: ToolStart) -> dict:
        """An explicit tool_start over a call the server recognised: its hold is redone with what the
        client said (the tool call itself was counted once)."""
        session = self.sessions[session_id]
        started_at = session.tool.started_at
        self._release_pin(session_id)
        if self.host_tier is not None:
            self.host_tier.forget(session_id)
        self.stats.tool_calls -= 1
        answer = self._start_tool(session, hint)
        session.tool.started_at = started_at  # the tool has been running since the turn ended
        return answer

    def _on_cancel_pending_tool(self, session_id: str) -> dict:
        session = self.sessions[session_id]
        hint, session.pending_tool = session.pending_tool, None
        return {"session_id": session_id, "tool_name": hint.tool_name, "cancelled_pending": True,
                "pin_expired_before_return": False, "pin_remaining_s": 0.0}

    def _on_finish_tool(self, session_id: str) -> dict:
        session = self.sessions[session_id]
        answer = self._finish_tool(session)
        if self.host_tier is not None:
            self.host_tier.prefetch_now(session_id)  # an early return reloads an offloaded session at once
        return answer

    def _on_end_turn(self, session_id: str) -> None:
        self.workflows.turn_ended(session_id)

    def _on_drop_turn(self, session_id: str) -> None:
        session = self.sessions[session_id]
        session.pending_tool = None  # the turn never ended in its announced tool call

    def _on_discard(self, session_id: str) -> None:
        self._drop_state(session_id)

    def _on_lapse(self, session_id: str) -> None:
        session = self.sessions[session_id]
        if session.tool.hold == HOLD_PIN:
            self.stats.pins_expired_before_tool_end += 1
            self._release_pin(session_id)
        else:
            self.stats.offloads_expired += 1
        session.tool.hold = HOLD_NONE

    def _on_close(self, session_id: str) -> dict:
        self._drop_state(session_id)
        return {"session_id": session_id, "closed": True}

    def _on_forget(self, session_id: str) -> None:
        self.stats.sessions_forgotten += 1
        self._drop_state(session_id)

    def drop_session(self, session_id: str) -> None:
        """Remove a session and everything it holds, whatever its state (after an internal error)."""
        if session_id in self.sessions:
            self._drop_state(session_id)

    def _drop_state(self, session_id: str) -> None:
        session = self.sessions.pop(session_id)
        self.state_counts[session.state] -= 1
        self.by_activity.pop(session_id, None)
        for rid in session.running_rids:
            self.rid_to_session.pop(rid, None)
            self.rids_in_scheduler.discard(rid)
        self.kv.forget_session(session_id)  # its pin and path too
        if self.host_tier is not None:
            self.host_tier.forget(session_id)
        self.workflows.session_gone(session_id)

    # ---- tool calls ------------------------------------------------------------------------------
    def _start_tool(self, session: AgentSession, hint: ToolStart) -> dict:
        now = self.clock()
        self.stats.tool_calls += 1
        self.workflows.tool_started(session.session_id)
        load = self.load_probe()
        decision, samples, cost, path_tokens = self._choose_ttl(session.session_id, hint, load)
        tool = session.tool = ToolCall(hint.tool_name, now, hint.expected_duration_s, detected=hint.detected)
        session.resuming = True  # the session's next turn follows this tool call
        self.stats.tool_calls_detected += hint.detected
        if session.implicit:
            # The prompt that resumes it covers the previous prompt but for the token where the new
            # text joins (the previous answer re-tokenizes), not necessarily the answer itself.
            session.anchor_tokens = max(0, session.last_prompt_tokens - 1)
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
        if self.host_tier is not None and path_tokens > 0 and hint.ttl_s is None:
            # The session's own path does not count as pressure (it is what the offload frees), even
            # where a lock holds it (HiCache's write-through locks a node until its copy lands).
            own_locked = path_tokens - self.kv.protectable_tokens(session.session_id)
            pressure = memory_pressure(load.waiting_requests, self.kv.free_tokens() + own_locked,
                                       self.kv.pool_tokens(), self.args.offload_watermark)
            placement = decide_placement(samples, cost, decision, self.host_tier.room_tokens() >= path_tokens,
                                         self.args.max_host_keep_s, pressure)
            body["memory_pressure"] = pressure
            if placement.action == OFFLOAD:
                self.host_tier.offload(session.session_id, path_tokens, now + placement.prefetch_after_s,
                                       now + placement.ttl_s)
                tool.hold = HOLD_OFFLOAD
                self.stats.offloads += 1
                self.stats.offloaded_tokens += path_tokens
                self.stats.offloads_for_waiting_requests += pressure == REQUESTS_WAITING
                self.stats.offloads_for_pool_watermark += pressure == POOL_ABOVE_WATERMARK
                return {**body, "action": OFFLOAD, "offloaded_tokens": path_tokens,
                        "prefetch_after_s": placement.prefetch_after_s, "host_keep_s": placement.ttl_s,
                        "offload_reason": pressure, "reason": placement.reason}
            if placement.action == KEEP:
                self.stats.kept_with_host_copy += 1
                return {**body, "action": KEEP, "reason": placement.reason}
        if hint.ttl_s is not None:  # cache_control / an explicit TTL: no policy, same cap and headroom
            return self._pin(session, tool, min(hint.ttl_s, self.args.max_cache_ttl_s), now, load,
                             {**body, "action": "pin", "reason": "TTL given by the client"})
        if decision.ttl_s <= 0:
            self.stats.pins_refused += 1
            return body
        # The policy's own pin is a guess: with a host tier, where losing the KV costs only a
        # reload, it takes no memory the waiting requests need either.
        return self._pin(session, tool, decision.ttl_s, now, load, body, yield_to_queue=self.host_tier is not None)

    def _pin(self, session: AgentSession, tool: ToolCall, ttl_s: float, now: float, load: LoadSnapshot,
             body: dict, yield_to_queue: bool = False) -> dict:
        deadline = now + ttl_s
        if self.args.pin_mode == "hard":
            protect = self.kv.protectable_tokens(session.session_id)
            if protect > self.headroom_tokens(load):
                # The running requests may need that memory to finish: never the pin that makes one fail.
                self.stats.pins_refused += 1
                self.stats.pins_refused_for_running_requests += 1
                return {**body, "action": "drop", "reason": "the running requests may need that memory"}
            if yield_to_queue and protect > self.speculative_headroom_tokens(load):
                self.stats.pins_refused += 1
                self.stats.pins_refused_for_waiting_requests += 1
                return {**body, "action": "drop",
                        "reason": "the waiting requests need that memory (its host copy covers an eviction)"}
        new_tokens = self.kv.unpinned_path_tokens(session.session_id)
        pinned_tokens = self.kv.pinned_tokens()
        cap = int(self.args.max_pinned_fraction * self.kv.pool_tokens())
        holdings = (h for h in self.kv.pins_soonest_first() if h.session_id != session.session_id)
        budget = plan_pin(new_tokens, pinned_tokens, cap, holdings, new_deadline=deadline)
        if not budget.admit:
            self.stats.pins_refused += 1
            return {**body, "action": "drop", "reason": budget.reason}
        for displaced in budget.release:
            self._release_pin(displaced)
        self.stats.pins_displaced += len(budget.release)
        pinned = self.kv.pin(session.session_id, deadline)
        if not pinned:
            self.stats.pins_refused += 1
            return {**body, "action": "drop", "reason": "nothing of the session is on the GPU to pin"}
        tool.hold, tool.ttl_s = HOLD_PIN, ttl_s
        self.stats.pins_created += 1
        return {**body, "ttl_s": ttl_s, "ttl_deadline": deadline, "pinned_tokens": pinned,
                "displaced_sessions": list(budget.release)}

    def _choose_ttl(self, session_id: str, hint: ToolStart, load: LoadSnapshot):
        path_tokens = self.kv.path_tokens(session_id)
        pool = max(1, self.kv.pool_tokens())
        cost = EvictionCost(
            recompute_s=path_tokens / self.args.prefill_tokens_per_s,
            # Without a host tier a lost prefix is recomputed.
            reload_s=None if self.host_tier is None else self.host_tier.reload_s(path_tokens),
            queue_delay_s=load.waiting_tokens / self.args.prefill_tokens_per_s,
        )
        rate = memory_cost_rate(path_tokens / pool, load.waiting_requests, self.args.memory_cost_scale)
        samples = self.durations.samples(hint.tool_name, hint.expected_duration_s)
        return choose_ttl(samples, cost, rate, self.args.max_ttl_s), samples, cost, path_tokens

    def _finish_tool(self, session: AgentSession) -> dict:
        """The tool returned (tool_end, or the next turn arrived): learn its duration; a pin still
        held is kept a short grace for the next turn, never past its TTL."""
        now = self.clock()
        tool, session.tool = session.tool, None
        session.resumed_from = tool.hold
        duration = now - tool.started_at
        self.durations.observe(tool.tool_name, duration)
        lapsed = session.state is State.LAPSED
        remaining = 0.0
        deadline = self.kv.pin_deadline(session.session_id) if tool.hold == HOLD_PIN else None
        if deadline is not None:
            deadline = min(deadline, now + self.args.resume_grace_s)
            self.kv.set_pin_deadline(session.session_id, deadline)
            remaining = max(0.0, deadline - now)
        return {
            "session_id": session.session_id,
            "tool_name": tool.tool_name,
            "tool_duration_s": duration,
            "pin_expired_before_return": lapsed,
            "pin_remaining_s": remaining if math.isfinite(remaining) else 0.0,
        }

    # ---- reading ---------------------------------------------------------------------------------
    def program_arrival(self, rid: str) -> Optional[float]:
        session_id = self.rid_to_session.get(rid)
        return None if session_id is None else self.sessions[session_id].program_arrival

    def snapshot(self) -> dict:
        """What /agent/stats and the metrics show; O(1) in the number of sessions and pins."""
        states = {state.value: n for state, n in self.state_counts.items()}
        return {
            "agent_disabled": False,
            "sessions": len(self.sessions),
            "sessions_by_state": states,
            "sessions_in_tool_call": states[State.IN_TOOL.value],
            "requests_bound": len(self.rid_to_session),
            "pinned_tokens": self.kv.pinned_tokens(),
            "pins": self.kv.pin_count(),
            "pin_cap_tokens": int(self.args.max_pinned_fraction * self.kv.pool_tokens()),
            "workflows": len(self.workflows),
            "learned_workflows": len(self.workflows.learned),
            "learned_roles": len(self.workflows.graph.rows) if self.workflows.graph is not None else 0,
            **vars(self.stats),
            "hit_rate_after_tool_calls": (
                self.stats.resumed_turns_with_hit / self.stats.resumed_turns if self.stats.resumed_turns else None
            ),
            "tool_durations": self.durations.summary(),
            "index_sizes": {"sessions": len(self.sessions), "requests_bound": len(self.rid_to_session),
                            "recent_turns": len(self.recent_rids) + len(self.recent_unbound),
                            "unbound_in_flight": len(self.unbound_entered),
                            "implicit_anchors": self.kv.resume_anchor_count()},
            **({"host_tier": None} if self.host_tier is None else self.host_tier.snapshot()),
            **self.reservation.snapshot(),
        }

    def check_integrity(self) -> None:
        """The controller's own invariants (tests run it after every operation)."""
        counted = {state: 0 for state in self.state_counts}
        for session in self.sessions.values():
            counted[session.state] += 1
        assert counted == self.state_counts, (counted, self.state_counts)
        self.reservation.check_integrity()
        assert self.reservation.held_back_rids <= set(self.entered_at), "held-back requests outlived their exit"
        for rid, session_id in self.rid_to_session.items():
            assert rid in self.sessions[session_id].running_rids, (rid, session_id)
        assert self.rids_in_scheduler <= set(self.rid_to_session), self.rids_in_scheduler - set(self.rid_to_session)
        assert set(self.by_activity) == set(self.sessions), "activity index out of step with the sessions"
        for session in self.sessions.values():
            state = session.state
            for rid in session.running_rids:
                assert self.rid_to_session.get(rid) == session.session_id, (session.session_id, rid)
            assert bool(session.running_rids) == (state in (State.RUNNING, State.TOOL_PENDING)), (session, state)
            assert (session.pending_tool is not None) == (state is State.TOOL_PENDING), (session, state)
            assert (session.tool is not None) == (state in (State.IN_TOOL, State.LAPSED)), (session, state)
            if state is State.LAPSED:
                assert session.tool.hold == HOLD_NONE, session
            if session.tool is not None and session.tool.hold == HOLD_PIN:
                assert self.kv.pin_deadline(session.session_id) is not None, session
            if session.tool is not None and session.tool.hold == HOLD_OFFLOAD and self.host_tier is not None:
                assert self.host_tier.has_job(session.session_id), session


def _aborted(req) -> bool:
    reason = getattr(req, "finished_reason", None)
    return reason is not None and type(reason).__name__ == "FINISH_ABORT"
