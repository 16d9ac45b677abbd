"""The session state machine: the table is total, every cell is what the controller does (each
state reached for real, each event fired for real), refusals change nothing, and random sequences
of hints, requests, aborts and time keep the controller in step with a reference model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sglang_agent.config import AgentServerArgs
from sglang_agent.controller import AgentController
from sglang_agent.hints import HintError, InlineAgentHint, ToolStart
from sglang_agent.policy.session_machine import TABLE, Event, Go, Refuse, State, transition
from test_agent_radix_cache import insert, make_cache
from test_controller import FINISH_ABORT, FakeReq

IDLE_S = 100.0
TTL_TOOL_S = 2.0  # declared: TTL 2.5 s


def test_the_table_is_total_and_refusals_are_4xx():
    assert set(TABLE) == set(itertools.product(State, Event))
    for outcome in TABLE.values():
        assert isinstance(outcome, (Go, Refuse))
        if isinstance(outcome, Refuse):
            assert 400 <= outcome.status < 500
        else:
            assert hasattr(AgentController, f"_on_{outcome.action}"), outcome.action


class Harness:
    """One controller, one session "s", and the ways to drive it."""

    def __init__(self):
        self.cache, self.clock = make_cache(400, pin_mode="hard")
        self.ctl = AgentController(self.cache, AgentServerArgs(session_idle_s=IDLE_S, max_ttl_s=60.0), self.clock)
        self.rids = itertools.count()
        self.keys = itertools.count(1)

    def state(self, session="s") -> State:
        s = self.ctl.sessions.get(session)
        return s.state if s else State.ABSENT

    def bind(self, session="s", tool=False) -> str:
        rid = f"r{next(self.rids)}"
        self.ctl.bind(rid, InlineAgentHint(session, ToolStart(session, "bash", TTL_TOOL_S) if tool else None))
        self.ctl.request_entered(rid)
        return rid

    def finish(self, rid: str, aborted=False) -> None:
        key = [next(self.keys) % 50, 7, 7, next(self.keys)]
        result = insert(self.cache, key)
        self.ctl.turn_finished(FakeReq(rid, result.last_device_node, key,
                                       finished_reason=FINISH_ABORT() if aborted else None))

    def running(self, session="s") -> list[str]:
        s = self.ctl.sessions.get(session)
        return sorted(s.running_rids) if s else []

    def advance(self, dt: float) -> None:
        self.clock.now += dt
        self.ctl.on_step()

    def reach(self, state: State, fresh: bool = False) -> None:
        """Put session "s" in `state`; a running one has a finished turn behind it unless `fresh`."""
        if state is State.ABSENT:
            return
        if state in (State.RUNNING, State.TOOL_PENDING) and not fresh:
            self.finish(self.bind())
        rid = self.bind(tool=state is State.TOOL_PENDING)
        if state in (State.RUNNING, State.TOOL_PENDING):
            return
        self.finish(rid)
        if state is State.IDLE:
            return
        self.ctl.tool_start(ToolStart("s", "bash", TTL_TOOL_S))
        if state is State.LAPSED:
            self.advance(3.0)

    def fire(self, event: Event) -> None:
        if event is Event.BIND:
            self.bind()
        elif event is Event.TURN_END:
            running = self.running()
            for rid in running:
                self.finish(rid)
            if not running:  # nothing of the session runs: a finish of another request
                self.ctl.turn_finished(FakeReq("not-bound", 0))
        elif event in (Event.TURN_DROPPED, Event.OPENING_DROPPED):
            for rid in self.running() or ["not-bound"]:
                self.ctl.request_dropped(rid)
        elif event is Event.TOOL_START:
            self.ctl.tool_start(ToolStart("s", "bash", TTL_TOOL_S))
        elif event is Event.TOOL_RESTART:  # an explicit tool_start over a recognised call
            session = self.ctl.sessions.get("s")
            if session is not None and session.tool is not None:
                session.tool.detected = True
            self.ctl.tool_start(ToolStart("s", "pytest", TTL_TOOL_S))
        elif event is Event.TOOL_END:
            self.ctl.tool_end("s")
        elif event is Event.CLOSE:
            self.ctl.close("s")
        elif event is Event.HOLD_LAPSED:
            self.advance(3.0)
        elif event is Event.IDLE_TIMEOUT:
            for _ in range(2):
                self.advance(IDLE_S + 1)

    def check(self) -> None:
        self.cache.check_integrity()
        self.ctl.check_integrity()


def _expected(state: State, event: Event):
    """What firing `event` from `state` yields, by the table. A lapse from IN_TOOL only happens when
    the time passes with a pin held (always, here); an idle timeout needs nothing held."""
    outcome = transition(state, event)
    if event is Event.IDLE_TIMEOUT and state is State.IN_TOOL:
        # Time passing first lapses the pin, then the lapsed session idles out.
        return Go(State.ABSENT, "forget")
    if event is Event.HOLD_LAPSED and state is State.LAPSED:
        return Go(State.LAPSED, "none")
    return outcome


@pytest.mark.parametrize("state, event", sorted(TABLE, key=lambda k: (k[0].value, k[1].value)))
def test_every_cell_of_the_table(state, event):
    h = Harness()
    h.reach(state, fresh=event is Event.OPENING_DROPPED)
    assert h.state() is state
    before = (h.ctl.snapshot(), h.running(), h.cache.pinned_tokens())
    expected = _expected(state, event)
    if isinstance(expected, Refuse):
        with pytest.raises(HintError) as e:
            h.fire(event)
        assert e.value.status == expected.status
        assert (h.ctl.snapshot(), h.running(), h.cache.pinned_tokens()) == before, "a refusal changed state"
    else:
        h.fire(event)
        assert h.state() is expected.state, (state, event, h.state())
    h.check()


# ---- random sequences against a reference model -----------------------------------------------

SESSIONS = ("a", "b")


class SessionMachine(RuleBasedStateMachine):
    """The reference: for each session its state (by the table) and its running requests; the
    controller must agree after every step, answer hints with the table's statuses, and leave no
    lock or pin behind once everything is closed."""

    def __init__(self):
        super().__init__()
        self.h = Harness()
        self.model: dict[str, State] = {}
        self.model_rids: dict[str, set[str]] = {}
        self.history: set[str] = set()  # sessions with a finished turn or a started tool since they opened

    def _state(self, s):
        return self.model.get(s, State.ABSENT)

    def _apply(self, s, event):
        outcome = transition(self._state(s), event)
        if isinstance(outcome, Go):
            if outcome.state is State.ABSENT:
                self.model.pop(s, None)
                self.model_rids.pop(s, None)
                self.history.discard(s)
            else:
                self.model[s] = outcome.state
        return outcome

    def _hint(self, s, event, call):
        outcome = transition(self._state(s), event)
        if isinstance(outcome, Refuse):
            with pytest.raises(HintError) as e:
                call()
            assert e.value.status == outcome.status
        else:
            started = event is Event.TOOL_START and self._state(s) is State.IDLE  # a deferred one has not
            call()
            self._apply(s, event)
            if started:
                self.history.add(s)

    @rule(s=st.sampled_from(SESSIONS), tool=st.booleans())
    def bind(self, s, tool):
        after = transition(self._state(s), Event.BIND)
        if tool and isinstance(transition(after.state, Event.TOOL_START), Refuse):
            with pytest.raises(HintError):
                self.h.bind(s, tool=True)
            return
        rid = self.h.bind(s, tool=tool)
        self._apply(s, Event.BIND)
        self.model_rids.setdefault(s, set()).add(rid)
        if tool:
            self._apply(s, Event.TOOL_START)

    @precondition(lambda self: any(self.model_rids.values()))
    @rule(data=st.data(), how=st.sampled_from(["finish", "abort", "drop_queued", "gone_unseen"]))
    def request_leaves(self, data, how):
        s = data.draw(st.sampled_from(sorted(k for k, v in self.model_rids.items() if v)))
        rid = data.draw(st.sampled_from(sorted(self.model_rids[s])))
        if how == "finish":
            self.h.finish(rid)
        elif how == "abort":
            self.h.finish(rid, aborted=True)
        elif how == "drop_queued":
            self.h.ctl.request_dropped(rid)
        else:  # the HTTP layer's "gone" for a request the scheduler never saw
            self.h.ctl.rids_in_scheduler.discard(rid)
            assert self.h.ctl.request_gone(rid)["dropped"]
        self.model_rids[s].discard(rid)
        if how == "finish":
            self.history.add(s)
        if not self.model_rids[s]:
            if how == "finish":
                self._apply(s, Event.TURN_END)
            else:
                self._apply(s, Event.TURN_DROPPED if s in self.history else Event.OPENING_DROPPED)

    @rule(s=st.sampled_from(SESSIONS))
    def tool_start(self, s):
        self._hint(s, Event.TOOL_START, lambda: self.h.ctl.tool_start(ToolStart(s, "bash", TTL_TOOL_S)))

    @rule(s=st.sampled_from(SESSIONS))
    def tool_end(self, s):
        self._hint(s, Event.TOOL_END, lambda: self.h.ctl.tool_end(s))

    @rule(s=st.sampled_from(SESSIONS))
    def close(self, s):
        self._hint(s, Event.CLOSE, lambda: self.h.ctl.close(s))

    @rule(dt=st.sampled_from([0.5, 3.0, IDLE_S + 1]))
    def time_passes(self, dt):
        before = {s: (st_, self.h.cache.pin_deadline(s), getattr(self.h.ctl.sessions[s].tool, "hold", None))
                  for s, st_ in self.model.items()}
        self.h.advance(dt)
        now = self.h.clock.now
        for s, (state, deadline, hold) in before.items():
            if state is State.IN_TOOL and hold == "pin" and deadline <= now:
                self._apply(s, Event.HOLD_LAPSED)
        for s in list(self.model):
            session = self.h.ctl.sessions.get(s)
            if session is None:  # forgotten: the model must agree it was idle long enough
                assert self.model[s] in (State.IDLE, State.LAPSED, State.IN_TOOL), (s, self.model[s])
                self._apply(s, Event.IDLE_TIMEOUT)

    @invariant()
    def agrees_with_the_model(self):
        assert {s: self.h.state(s) for s in SESSIONS} == {s: self._state(s) for s in SESSIONS}
        for s in SESSIONS:
            assert self.h.running(s) == sorted(self.model_rids.get(s, ()))
        self.h.check()

    def teardown(self):
        for s in list(self.h.ctl.sessions):
            self.h.ctl.close(s)
        assert self.h.cache.pinned_tokens() == 0 and self.h.cache.protected_size() == 0, "a lock outlived its session"
        assert not self.h.ctl.rid_to_session


SessionMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
TestSessionMachine = SessionMachine.TestCase
