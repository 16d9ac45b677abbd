"""AgentController over a CPU AgentRadixCache with a fake clock: hints, request exits, pins and
their lapse, memory given back, idle sessions, workflows. Every test ends with check_integrity."""

from dataclasses import dataclass, field
from typing import Optional

import pytest
from sglang.srt.mem_cache.base_prefix_cache import EvictParams

from sglang_agent.config import AgentServerArgs
from sglang_agent.controller import AgentController, LoadSnapshot
from sglang_agent.hints import HintError, InlineAgentHint, ToolStart, WorkflowAgent, WorkflowDef, WorkflowStep
from sglang_agent.policy.session_machine import State
from sglang_agent.policy.temporal import HostEvents
from test_agent_radix_cache import insert, make_cache, match


@dataclass
class FakeReq:
    rid: str
    last_node: int
    origin_input_ids: list = field(default_factory=list)
    cached_tokens: int = 0
    finished_reason: Optional[object] = None


class FINISH_ABORT:  # noqa: N801 -- named like SGLang's, which the controller recognises by name
    pass


@pytest.fixture
def env():
    """(cache, clock, controller) with the integrity of both checked after the test."""
    made = []

    def build(pool=200, **args):
        cache, clock = make_cache(pool, pin_mode=args.pop("pin_mode", "hard"))
        controller = AgentController(cache, AgentServerArgs(**args), clock)
        made.append((cache, controller))
        return cache, clock, controller

    yield build
    for cache, controller in made:
        cache.check_integrity()
        controller.check_integrity()


def run_turn(cache, controller, session, rid, key, cached=0, tool=None):
    controller.bind(rid, InlineAgentHint(session, tool))
    controller.request_entered(rid)
    result = insert(cache, key)
    controller.turn_finished(FakeReq(rid, result.last_device_node, list(key), cached))


def pinned(cache, session_id) -> int:
    return sum(n.device_tokens for n in cache._pinned_nodes.get(session_id, ()))


def test_tool_call_pins_and_resume_counts_hit(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(40))
    answer = ctl.tool_start(ToolStart("a", "bash", expected_duration_s=2.0))
    assert answer["ttl_s"] == pytest.approx(2.5) and answer["pinned_tokens"] == 40
    clock.now = 1.0
    end = ctl.tool_end("a")
    assert end["tool_duration_s"] == pytest.approx(1.0) and end["pin_remaining_s"] > 0
    run_turn(cache, ctl, "a", "r2", list(range(40)) + [7, 7], cached=40)
    stats = ctl.snapshot()
    assert stats["resumed_turns"] == 1 and stats["resumed_turns_with_hit"] == 1
    assert stats["hit_rate_after_tool_calls"] == 1.0
    assert ctl.durations.samples("bash")[0] == pytest.approx(1.0)


def test_a_resumed_turn_that_lost_the_previous_prompt_is_no_hit(env):
    """Hit = the previous turn's prompt was cached, not merely "some" cached tokens (the shared
    system prompt is cached for everyone)."""
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(40))
    ctl.tool_start(ToolStart("a", "bash", 1.0))
    run_turn(cache, ctl, "a", "r2", list(range(40)) + [7], cached=10)
    assert ctl.snapshot()["resumed_turns"] == 1 and ctl.snapshot()["resumed_turns_with_hit"] == 0


def test_bad_hints_change_nothing(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(10))
    before = ctl.snapshot()
    for call, status in ((lambda: ctl.tool_end("a"), 409), (lambda: ctl.tool_start(ToolStart("ghost", "bash")), 404),
                         (lambda: ctl.close("ghost"), 404), (lambda: ctl.tool_end("ghost"), 404)):
        with pytest.raises(HintError) as e:
            call()
        assert e.value.status == status
    assert ctl.snapshot() == before
    ctl.tool_start(ToolStart("a", "bash"))
    with pytest.raises(HintError) as e:
        ctl.tool_start(ToolStart("a", "bash"))
    assert e.value.status == 409
    pinned_now = ctl.snapshot()["pinned_tokens"]
    ctl.bind("r2", InlineAgentHint("b"))
    with pytest.raises(HintError) as e:
        ctl.bind("r2", InlineAgentHint("a"))
    assert e.value.status == 409
    assert ctl.snapshot()["pinned_tokens"] == pinned_now
    assert ctl.snapshot()["tool_calls"] == 1 and ctl.sessions["a"].tool is not None


def test_inline_tool_start_pins_when_turn_ends(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(30), tool=ToolStart("a", "search", 1.0))
    assert pinned(cache, "a") == 30
    assert ctl.sessions["a"].tool.tool_name == "search" and ctl.sessions["a"].state is State.IN_TOOL


def test_tool_start_during_running_turn_is_deferred(env):
    cache, clock, ctl = env()
    ctl.bind("r1", InlineAgentHint("a"))
    assert ctl.tool_start(ToolStart("a", "bash", 1.0))["deferred"] is True
    result = insert(cache, range(20))
    ctl.turn_finished(FakeReq("r1", result.last_device_node, list(range(20))))
    assert pinned(cache, "a") == 20


def test_second_tool_start_behind_a_running_turn_is_refused(env):
    """Defect (issue "No lost work", 3): a second tool_start while the turn still ran was accepted
    and silently replaced the first (the README promises 409). Failed on main: no HintError."""
    cache, clock, ctl = env()
    ctl.bind("r1", InlineAgentHint("a"))
    ctl.tool_start(ToolStart("a", "bash", 1.0))
    with pytest.raises(HintError) as e:
        ctl.tool_start(ToolStart("a", "python", 9.0))
    assert e.value.status == 409 and "bash" in e.value.reason
    assert ctl.sessions["a"].pending_tool.tool_name == "bash"
    with pytest.raises(HintError) as e:  # the same through an inline hint of a parallel request
        ctl.bind("r2", InlineAgentHint("a", ToolStart("a", "python")))
    assert e.value.status == 409 and "r2" not in ctl.rid_to_session


def test_tool_end_before_the_turn_ends_cancels_the_pending_tool(env):
    """Defect (issue "No lost work", 3): a tool_end that arrived before the turn finished got 409,
    and then the deferred tool started anyway and held a pin until its TTL. Failed on main: 409,
    then 20 tokens pinned after the turn ended."""
    cache, clock, ctl = env()
    ctl.bind("r1", InlineAgentHint("a"))
    ctl.tool_start(ToolStart("a", "bash", 30.0))
    clock.now = 0.5
    answer = ctl.tool_end("a")
    assert answer["cancelled_pending"] is True
    result = insert(cache, range(20))
    ctl.turn_finished(FakeReq("r1", result.last_device_node, list(range(20))))
    assert pinned(cache, "a") == 0 and ctl.sessions["a"].state is State.IDLE
    assert ctl.snapshot()["tool_calls"] == 0


def test_a_lapsed_pin_leaves_the_tool_state_and_is_counted(env):
    """Defect (issue "No lost work", 3): a client that vanished during its tool stayed in
    sessions_in_tool_call forever and its lapsed pin was counted nowhere. Failed on main:
    sessions_in_tool_call 1 and pins_expired_before_tool_end 0 after the TTL."""
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(30))
    ttl = ctl.tool_start(ToolStart("a", "bash", 2.0))["ttl_s"]
    clock.now = ttl + 0.01
    ctl.on_step()
    snap = ctl.snapshot()
    assert snap["pinned_tokens"] == 0 and snap["sessions_in_tool_call"] == 0
    assert snap["pins_expired_before_tool_end"] == 1 and ctl.sessions["a"].state is State.LAPSED
    clock.now = 10.0
    end = ctl.tool_end("a")  # the tool did come back, late: its duration still counts
    assert end["pin_expired_before_return"] is True and end["tool_duration_s"] == pytest.approx(10.0)
    assert 10.0 in ctl.durations.samples("bash")


def test_close_returns_pinned_tokens_to_zero(env):
    cache, clock, ctl = env()
    for s in ("a", "b"):
        run_turn(cache, ctl, s, f"{s}1", [ord(s)] + list(range(20)))
        ctl.tool_start(ToolStart(s, "bash", 5.0))
    assert ctl.snapshot()["pinned_tokens"] == 42
    ctl.close("a")
    ctl.close("b")
    assert ctl.snapshot()["pinned_tokens"] == 0 and ctl.snapshot()["sessions"] == 0
    assert cache.protected_size() == 0  # no lock of ours is left


def test_pin_cap_displaces_sooner_pin_and_refuses_oversize(env):
    cache, clock, ctl = env(pool=100, max_pinned_fraction=0.5)
    run_turn(cache, ctl, "a", "a1", range(0, 30))
    ctl.tool_start(ToolStart("a", "t", 1.0))
    run_turn(cache, ctl, "b", "b1", range(100, 130))
    answer = ctl.tool_start(ToolStart("b", "t", 10.0))
    assert answer["displaced_sessions"] == ["a"] and ctl.snapshot()["pinned_tokens"] == 30
    assert ctl.sessions["a"].tool.hold == "none"  # displaced: still in its tool, nothing held
    run_turn(cache, ctl, "c", "c1", range(200, 260))
    assert ctl.tool_start(ToolStart("c", "t", 1.0))["ttl_s"] == 0.0  # 60 tokens > cap of 50
    assert ctl.snapshot()["pins_refused"] == 1


def test_busy_server_shortens_or_skips_the_pin(env):
    cache, clock, ctl = env(pool=100)
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=50, waiting_tokens=0)
    run_turn(cache, ctl, "a", "r1", range(40))
    answer = ctl.tool_start(ToolStart("a", "slow_tool", 30.0))
    assert answer["ttl_s"] == 0.0 and answer["pinned_tokens"] == 0


def test_a_pin_never_takes_memory_the_running_requests_need(env):
    """Defect (issue "No lost work", 1): a pin took an evictable prefix that a decoding request's
    reservation counted on. Failed on main: the pin was made (40 tokens) although free + evictable
    (100) minus the running batch's remaining output (80) left only 20."""
    cache, clock, ctl = env(pool=100)
    run_turn(cache, ctl, "a", "r1", range(40))
    ctl.load_probe = lambda: LoadSnapshot(decode_reserve_tokens=80)
    answer = ctl.tool_start(ToolStart("a", "bash", 5.0))
    assert answer["pinned_tokens"] == 0 and answer["action"] == "drop"
    assert ctl.snapshot()["pins_refused_for_running_requests"] == 1 and cache.protected_size() == 0
    ctl.load_probe = lambda: LoadSnapshot(decode_reserve_tokens=10)
    ctl.tool_end("a")
    run_turn(cache, ctl, "a", "r2", list(range(40)) + [1])
    assert ctl.tool_start(ToolStart("a", "bash", 5.0))["pinned_tokens"] == 41


def test_pins_give_way_to_the_running_batch_closest_to_expiry_first(env):
    cache, clock, ctl = env(pool=200)
    for s, base, duration in (("late", 0, 40.0), ("soon", 100, 10.0)):
        run_turn(cache, ctl, s, f"{s}1", range(base, base + 30))
        ctl.tool_start(ToolStart(s, "bash", duration))
    assert cache.free_tokens() == 140
    released = ctl.release_pins(lambda: cache.free_tokens() >= 150, "decode")
    assert released == ["soon"] and pinned(cache, "late") == 30
    stats = ctl.snapshot()
    assert stats["pins_released_for_decode"] == 1 and stats["pins_displaced"] == 1
    assert ctl.sessions["soon"].tool.hold == "none" and ctl.sessions["soon"].state is State.IN_TOOL


def test_program_arrival_is_the_first_turn(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(5))
    clock.now = 9.0
    ctl.bind("r2", InlineAgentHint("a"))
    assert ctl.program_arrival("r2") == 0.0
    assert ctl.program_arrival("unrelated") is None


# ---- requests that leave without finishing ----------------------------------------------------

def test_a_request_dropped_while_queued_does_not_wedge_its_session(env):
    """Defect (issue "No lost work", 2): a request aborted while still queued went through the tree
    cache's finish path without on_release, its rid stayed among the session's running requests,
    and every later tool_start was answered {"deferred": true}. Failed on main: deferred True."""
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(30))
    ctl.bind("r2", InlineAgentHint("a", ToolStart("a", "bash", 1.0)))
    ctl.request_entered("r2")
    ctl.request_dropped("r2")  # the scheduler's finish(ABORT) for a queued request
    assert ctl.sessions["a"].state is State.IDLE and not ctl.sessions["a"].running_rids
    assert ctl.tool_start(ToolStart("a", "bash", 1.0)).get("deferred") is None
    assert ctl.snapshot()["turns_dropped"] == 1


def test_an_aborted_running_turn_does_not_start_its_announced_tool(env):
    cache, clock, ctl = env()
    ctl.bind("r1", InlineAgentHint("a", ToolStart("a", "bash", 5.0)))
    ctl.request_entered("r1")
    result = insert(cache, range(20))
    ctl.turn_finished(FakeReq("r1", result.last_device_node, list(range(20)), finished_reason=FINISH_ABORT()))
    assert "a" not in ctl.sessions and pinned(cache, "a") == 0  # its opening request: nothing left
    run_turn(cache, ctl, "b", "b1", range(100, 120))
    ctl.bind("b2", InlineAgentHint("b", ToolStart("b", "bash", 5.0)))
    ctl.request_entered("b2")
    result = insert(cache, list(range(100, 120)) + [5])
    ctl.turn_finished(FakeReq("b2", result.last_device_node, [], finished_reason=FINISH_ABORT()))
    assert ctl.sessions["b"].state is State.IDLE and pinned(cache, "b") == 0


def test_gone_drops_only_requests_the_scheduler_never_received(env):
    cache, clock, ctl = env()
    ctl.bind("r1", InlineAgentHint("a"))
    assert ctl.request_gone("r1")["dropped"] is True  # refused before the scheduler (or client gone)
    ctl.bind("r2", InlineAgentHint("a"))
    ctl.request_entered("r2")
    assert ctl.request_gone("r2")["dropped"] is False  # the scheduler will end it
    assert ctl.sessions["a"].running_rids == {"r2"}
    ctl.request_dropped("r2")
    ctl.request_dropped("r2")  # idempotent
    assert ctl.request_gone("r2")["dropped"] is False
    assert ctl.unbind("r2") == {"rid": "r2", "unbound": False}


def test_unbind_forgets_a_refused_request(env):
    cache, clock, ctl = env()
    ctl.bind("r-new", InlineAgentHint("fresh", ToolStart("fresh", "bash", 1.0)))
    assert ctl.unbind("r-new")["unbound"] and "r-new" not in ctl.rid_to_session
    assert "fresh" not in ctl.sessions  # a refused first request leaves nothing behind
    run_turn(cache, ctl, "old", "r1", range(40))
    ctl.bind("r2", InlineAgentHint("old", ToolStart("old", "bash", 1.0)))
    ctl.unbind("r2")
    assert ctl.sessions["old"].running_rids == set() and ctl.sessions["old"].pending_tool is None
    assert ctl.tool_start(ToolStart("old", "bash", 1.0)).get("deferred") is None  # not waiting on r2


def test_pin_is_released_once_the_resumed_turn_ends(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "a", "r1", range(30))
    ctl.tool_start(ToolStart("a", "bash", 5.0))
    clock.now = 1.0
    run_turn(cache, ctl, "a", "r2", list(range(30)) + [9], cached=30)  # last turn: no tool after
    assert ctl.snapshot()["pinned_tokens"] == 0 and cache.protected_size() == 0


# ---- idle sessions ------------------------------------------------------------------------------

def test_idle_sessions_are_forgotten_and_state_stays_bounded(env):
    """Issue "Zero-hint agents" 4 / "No lost work" 3: sessions never closed lived forever. 3,000
    sessions opened and left: after --agent-session-idle-s they are all gone, with their paths."""
    cache, clock, ctl = env(pool=4000, session_idle_s=60.0)
    for i in range(3000):
        run_turn(cache, ctl, f"s{i}", f"r{i}", [i % 997, 1000 + i])
    ctl.bind("busy-r", InlineAgentHint("busy"))  # a session with a running request is never idle
    assert ctl.snapshot()["sessions"] == 3001
    clock.now = 61.0
    for _ in range(20):
        ctl.on_step()
    assert set(ctl.sessions) == {"busy"} and ctl.snapshot()["sessions_forgotten"] == 3000
    assert len(cache._session_last_node) == 0 and len(ctl.by_activity) == 1
    run_turn(cache, ctl, "s5", "again", [5, 1005])  # a forgotten session that comes back starts anew
    assert ctl.sessions["s5"].program_arrival == 61.0


def test_a_session_holding_a_pin_is_not_idle(env):
    cache, clock, ctl = env(session_idle_s=5.0, max_ttl_s=60.0)
    run_turn(cache, ctl, "a", "r1", range(30))
    ctl.tool_start(ToolStart("a", "bash", 20.0))  # TTL 25 s
    clock.now = 10.0
    ctl.on_step()
    assert "a" in ctl.sessions and pinned(cache, "a") == 30
    clock.now = 26.0
    ctl.on_step()  # the pin lapses: the idle countdown starts
    assert ctl.sessions["a"].state is State.LAPSED
    clock.now = 32.0
    ctl.on_step()
    assert "a" not in ctl.sessions


# ---- workflows ----------------------------------------------------------------------------------

def three_agent_workflow(ctl, **kw):
    agents = tuple(WorkflowAgent(a, f"s_{a}") for a in ("plan", "code", "test"))
    return ctl.declare_workflow(WorkflowDef("wf", agents, schedule=("plan", "code", "test", "plan", "code"), **kw))


def test_workflow_steps_reach_the_tree_and_drive_eviction(env):
    cache, clock, ctl = env(pool=100)
    three_agent_workflow(ctl)
    prefixes = {"plan": range(0, 30), "code": range(100, 130), "test": range(200, 230)}
    for agent in ("plan", "code", "test"):
        ctl.workflow_step(WorkflowStep("wf", agent))
        run_turn(cache, ctl, f"s_{agent}", f"r_{agent}", prefixes[agent])
    # test is running (0 steps), plan is due in 1 step, code in 2. LRU would drop plan (oldest).
    assert cache.last_node("s_plan").steps_to_execution == 1
    cache.evict(EvictParams(num_tokens=20))
    assert match(cache, prefixes["plan"]).device_prefix_len == 30
    assert match(cache, prefixes["code"]).device_prefix_len == 0
    assert match(cache, prefixes["test"]).device_prefix_len == 30


def test_a_role_prompt_is_protected_for_the_next_instance_whatever_its_session_ids(env):
    """Defect (issue "Multi-agent workflows as real DAGs", 1): steps-to-execution reached only the
    nodes a session already owned, so a new instance's planner (a new session, no path yet) found
    its fixed role prompt evicted (1% cached). Its role's prefix (the part two instances' planner
    sessions share) now carries the role's steps."""
    cache, clock, ctl = env(pool=140)
    role_prompt = list(range(0, 40))

    def instance(n):
        agents = (WorkflowAgent("planner", f"wf{n}/planner"), WorkflowAgent("writer", f"wf{n}/writer"))
        ctl.declare_workflow(WorkflowDef(f"wf{n}", agents, schedule=("planner", "writer")))

    def run(n, agent, key):
        ctl.workflow_step(WorkflowStep(f"wf{n}", agent))
        run_turn(cache, ctl, f"wf{n}/{agent}", f"r{n}{agent}", key)

    for n in (1, 2):
        instance(n)
        run(n, "planner", role_prompt + [1000 * n + i for i in range(10)])
        run(n, "writer", [500 + 100 * n + i for i in range(20)])
        assert f"wf{n}" not in ctl.workflows.workflows  # ended after the writer's turn
    role_node = cache.last_node("role:planner")
    assert role_node is not None and list(role_node.key)[-1] == 39  # exactly the shared role prompt
    instance(3)  # its planner runs next: steps 0 for the role, though its session has no path
    assert role_node.steps_to_execution == 0
    # Other tenants' prompts, newer than the role prompt, fill the pool; eviction takes LRU order.
    for i in range(4):
        insert(cache, [3000 + 100 * i + j for j in range(25)])
    cache.evict(EvictParams(num_tokens=60))
    assert match(cache, role_prompt).device_prefix_len == 40
    run(3, "planner", role_prompt + [3333])
    # With no live workflow of that role, its prefix is an ordinary LRU node again.
    run(3, "writer", [999, 998])
    assert role_node.steps_to_execution is None


def test_a_role_due_next_has_its_prompt_prefetched_from_the_host_tier(env):
    """KVFlow's prefetch covers a role's prefix, not only an agent's own session: a new instance's
    planner (a session with no path yet) finds its role prompt reloaded ahead of its turn.
    Measured in the simulator's KVFlow setting (python -m eval.anchors): 1.11x -> 1.38x over
    HiCache."""
    class RecordingHost:
        def __init__(self):
            self.prefetched = []

        def prefetch_prefix(self, session_id):
            self.prefetched.append(session_id)
            return 0

    cache, clock, ctl = env(pool=400)
    host = ctl.workflows.host_tier = RecordingHost()

    def instance(n):
        agents = (WorkflowAgent("planner", f"wf{n}/planner"), WorkflowAgent("writer", f"wf{n}/writer"))
        ctl.declare_workflow(WorkflowDef(f"wf{n}", agents, schedule=("planner", "writer")))

    for n in (1, 2):
        instance(n)
        for agent, key in (("planner", list(range(40)) + [1000 * n]), ("writer", [500 + 100 * n + i for i in range(5)])):
            ctl.workflow_step(WorkflowStep(f"wf{n}", agent))
            run_turn(cache, ctl, f"wf{n}/{agent}", f"r{n}{agent}", key)
    host.prefetched.clear()
    instance(3)
    assert "role:planner" in host.prefetched  # due now (step 0), its instance's session has no path
    assert "role:writer" in host.prefetched  # due next (step 1)


@pytest.mark.parametrize("min_observations, kept", [(2, True), (100, False)])
def test_an_undeclared_workflow_teaches_the_graph_that_protects_the_next_roles_prompts(env, min_observations, kept):
    """Issue "Multi-agent workflows as real DAGs", 2: no declaration, only inline steps (workflow and
    agent ids). Two instances of planner -> worker_1 || worker_2 -> reviewer teach the role graph;
    in the third, once the planner ran, the workers' and the reviewer's role prompts carry steps
    (1, 2) and the workers' outlive an eviction in LRU order that takes them otherwise (the control: a graph
    that is never trusted, 100 observations needed, keeps plain LRU order)."""
    cache, clock, ctl = env(pool=400, workflow_min_observations=min_observations)
    roles = {"planner": 0, "worker_1": 100, "worker_2": 200, "reviewer": 300}
    prompts = {agent: [base + i for i in range(20)] for agent, base in roles.items()}
    results = {}

    def start(n, agent):
        session = f"wf{n}/{agent}"
        answer = ctl.bind(f"r{n}{agent}", InlineAgentHint(session, workflow_step=WorkflowStep(f"wf{n}", agent,
                                                                                              session_id=session)))
        ctl.request_entered(f"r{n}{agent}")
        return answer

    def finish(n, agent):
        key = prompts[agent] + [1000 * n + roles[agent] + i for i in range(5)]
        result = insert(cache, key)
        ctl.turn_finished(FakeReq(f"r{n}{agent}", result.last_device_node, key, 0))

    for n in (1, 2):
        start(n, "planner")
        finish(n, "planner")
        start(n, "worker_1")
        start(n, "worker_2")  # parallel: both step before either ends
        finish(n, "worker_2")
        finish(n, "worker_1")
        start(n, "reviewer")
        finish(n, "reviewer")
    # Both instances live on (nobody knows yet that the reviewer is last); the reviewer's end is
    # counted when its instance is forgotten, so only the three roles something followed are rows.
    assert ctl.snapshot()["learned_workflows"] == 2 and ctl.snapshot()["learned_roles"] == 3
    start(3, "planner")
    answer = ctl.workflows.step(WorkflowStep("wf3", "planner", session_id="wf3/planner"))  # said twice: no change
    assert answer["learned"] is True
    finish(3, "planner")
    reviewer = cache.last_node("role:reviewer")
    assert reviewer is not None and list(reviewer.key)[-1] == 319  # the role prompt the instances share
    if kept:
        assert answer["role_steps_to_execution"] == {"planner": 0, "worker_1": 1, "worker_2": 1, "reviewer": 2}
        assert reviewer.steps_to_execution == 2
        assert cache.last_node("role:worker_1").steps_to_execution == 1
    else:
        assert answer["role_steps_to_execution"] == {"planner": 0} and reviewer.steps_to_execution is None
    for i in range(4):
        insert(cache, [5000 + 100 * i + j for j in range(20)])  # other tenants, newer
    # LRU order takes the old instances' suffixes, then the workers' role prompts (used before the
    # reviewer's); steps 1 rank them like nodes used one step ago, after the other tenants' nodes.
    cache.evict(EvictParams(num_tokens=80))
    for agent in ("worker_1", "worker_2"):
        assert (match(cache, prompts[agent]).device_prefix_len == 20) is kept, agent


def test_undeclared_steps_need_learning_and_a_session(env):
    cache, clock, ctl = env(learn_workflows=False)
    with pytest.raises(HintError) as e:
        ctl.bind("r1", InlineAgentHint("s", workflow_step=WorkflowStep("wf", "a", session_id="s")))
    assert e.value.status == 404 and "s" not in ctl.sessions
    cache, clock, ctl = env()
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("wf", "a"))  # no session: nothing to learn into
    assert e.value.status == 404 and "session_id" in e.value.reason
    ctl.bind("r1", InlineAgentHint("s", workflow_step=WorkflowStep("wf", "a", session_id="s")))
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("wf", "a", session_id="other"))
    assert e.value.status == 409
    with pytest.raises(HintError) as e:
        ctl.declare_workflow(WorkflowDef("wf", (WorkflowAgent("a", "s"),), schedule=("a",)))
    assert e.value.status == 409 and "undeclared" in e.value.reason
    ctl.close("s")  # its last session gone: the learned instance goes too
    assert ctl.snapshot()["learned_workflows"] == 0 and not ctl.workflows.session_roles


def test_a_tool_call_recognised_after_the_turn_ended_keeps_the_learned_agent_running(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "s", "r0", range(10))  # the session exists
    ctl.bind("r1", InlineAgentHint("s", workflow_step=WorkflowStep("wf", "a", session_id="s")))
    ctl.request_entered("r1")
    ctl.turn_finished(FakeReq("r1", insert(cache, list(range(12))).last_device_node, list(range(12)), 10))
    assert ctl.workflows.learned["wf"].running() == set()
    ctl.tool_start(ToolStart("s", "bash", 1.0, detected=True))  # read from the answer afterwards
    assert ctl.workflows.learned["wf"].running() == {"a"}


def test_a_tool_call_read_after_the_last_agents_turn_ended_reopens_the_workflow(env):
    """Defect (found by the simulator's TokenCake DAG, whose last agents call tools): the last
    sink's turn ended, the workflow ended with it, and the tool call that the client announced
    after the answer (or the server read from it) came too late: the sink's next turns ranked as
    plain LRU. The workflow is reopened (within REOPEN_GRACE_S) and ends after the real last turn."""
    cache, clock, ctl = env()
    agents = (WorkflowAgent("plan", "wf/plan"), WorkflowAgent("a", "wf/a"), WorkflowAgent("b", "wf/b"))
    ctl.declare_workflow(WorkflowDef("wf", agents, edges=(("plan", "a"), ("plan", "b")), dag=True))
    for i, agent in enumerate(("plan", "a", "b")):
        ctl.workflow_step(WorkflowStep("wf", agent))
        run_turn(cache, ctl, f"wf/{agent}", f"r{i}", [100 * i + j for j in range(10)])
    assert "wf" not in ctl.workflows.workflows  # b's turn ended: so did the workflow, for now
    ctl.tool_start(ToolStart("wf/b", "bash", 1.0, detected=True))  # read from b's answer
    assert "wf" in ctl.workflows.workflows and ctl.workflows.steps["wf"]["b"] == 0
    clock.now = 1.0
    ctl.tool_end("wf/b")
    run_turn(cache, ctl, "wf/b", "r9", [200 + j for j in range(12)])
    assert "wf" not in ctl.workflows.workflows and "wf" in ctl.workflows.ended
    clock.now = 10.0
    ctl.tool_start(ToolStart("wf/b", "bash", 1.0))  # long after: the workflow stays ended
    assert "wf" not in ctl.workflows.workflows


def test_workflow_errors_change_nothing(env):
    cache, clock, ctl = env()
    three_agent_workflow(ctl)
    with pytest.raises(HintError) as e:
        three_agent_workflow(ctl)
    assert e.value.status == 409
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("wf", "code"))  # schedule starts with plan
    assert e.value.status == 409
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("nope", "plan"))
    assert e.value.status == 404
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("wf", "ghost"))
    assert e.value.status == 404
    with pytest.raises(HintError) as e:
        ctl.declare_workflow(WorkflowDef("cyc", (WorkflowAgent("a", "x"), WorkflowAgent("b", "y")),
                                         edges=(("a", "b"), ("b", "a")), dag=True))
    assert e.value.status == 400 and "cycle" in e.value.reason
    assert ctl.workflows.workflows["wf"].position == -1 and set(ctl.workflows.workflows) == {"wf"}


def test_inline_workflow_step_rejected_before_binding(env):
    cache, clock, ctl = env()
    three_agent_workflow(ctl)
    with pytest.raises(HintError):
        ctl.bind("r1", InlineAgentHint("s_code", workflow_step=WorkflowStep("wf", "code")))
    assert "r1" not in ctl.rid_to_session and "s_code" not in ctl.sessions
    ctl.bind("r1", InlineAgentHint("s_plan", workflow_step=WorkflowStep("wf", "plan")))
    assert ctl.workflows.workflows["wf"].position == 0


def test_last_agents_finished_turn_ends_the_workflow_and_frees_its_rank(env):
    """Regression: the last agent kept "runs now" (0 steps) forever once a workflow was over,
    so finished workflows' prefixes outranked every live workflow's under KVFlow eviction."""
    cache, clock, ctl = env(pool=200)
    three_agent_workflow(ctl)
    prefixes = {"plan": range(0, 30), "code": range(100, 130), "test": range(200, 230)}
    workflow = ctl.workflows.workflows["wf"]
    for agent in workflow.schedule:
        ctl.workflow_step(WorkflowStep("wf", agent))
        last = workflow.at_last_step
        run_turn(cache, ctl, f"s_{agent}", f"r_{agent}{clock()}", prefixes[agent],
                 tool=None if last else ToolStart(f"s_{agent}", "handoff", 1.0))
        clock.now += 1
        if not last:
            assert not workflow.ended
            ctl.tool_end(f"s_{agent}")
    assert "wf" not in ctl.workflows.workflows and not ctl.workflows.agent_sessions
    assert not ctl.workflows.session_roles and ctl.snapshot()["workflows"] == 0
    assert all(cache.last_node(f"s_{a}").steps_to_execution is None for a in prefixes)
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("wf", "code"))
    assert e.value.status == 409 and "ended" in e.value.reason


def test_a_workflow_ends_when_all_its_sessions_are_closed(env):
    """Defect (issue "No lost work", 3): declared workflows outlived the sessions they were declared
    for. Failed on main: 1 workflow left after closing every session."""
    cache, clock, ctl = env()
    three_agent_workflow(ctl)
    ctl.workflow_step(WorkflowStep("wf", "plan"))
    for agent in ("plan", "code"):
        run_turn(cache, ctl, f"s_{agent}", f"r_{agent}", [ord(agent[0]), 1, 2])
    ctl.close("s_plan")
    assert ctl.snapshot()["workflows"] == 1  # s_code still lives
    ctl.close("s_code")
    assert ctl.snapshot()["workflows"] == 0


def test_a_declared_workflow_nobody_uses_is_forgotten(env):
    cache, clock, ctl = env(session_idle_s=30.0)
    three_agent_workflow(ctl)
    clock.now = 31.0
    ctl.on_step()
    assert ctl.snapshot()["workflows"] == 0


def test_a_session_in_two_workflows_is_needed_as_soon_as_either_needs_it(env):
    cache, clock, ctl = env()
    run_turn(cache, ctl, "shared", "r0", range(30))
    ctl.declare_workflow(WorkflowDef("w1", (WorkflowAgent("a", "w1-a"), WorkflowAgent("tool", "shared")),
                                     schedule=("a", "a", "a", "tool")))
    node = cache.last_node("shared")
    assert node.steps_to_execution == 3
    ctl.declare_workflow(WorkflowDef("w2", (WorkflowAgent("b", "w2-b"), WorkflowAgent("tool", "shared")),
                                     schedule=("b", "tool")))
    assert node.steps_to_execution == 1  # w2 needs it sooner
    ctl.workflow_step(WorkflowStep("w1", "a"))  # w1's distance changes; w2's 1 still wins
    assert node.steps_to_execution == 1
    ctl.workflow_step(WorkflowStep("w2", "b"))
    assert node.steps_to_execution == 1  # now w2: 1 step away (tool is next)
    ctl.workflow_step(WorkflowStep("w2", "tool"))
    assert node.steps_to_execution == 0


# ---- work per request does not grow with the sessions sharing a prefix ---------------------------

def test_a_turn_touches_no_per_session_state_of_a_shared_prefix(env, monkeypatch):
    """Defect (issue "No lost work", 7): record_turn added the session to every node of its path and
    recomputed each node's steps over all of that node's sessions, the system prompt node every
    session shares included (3.2 ms per request at 26k sessions). Now a turn of a session outside
    any workflow touches no node's per-session state at all, and a workflow session's turn sets its
    own steps on its own path only. eval/bench_radix.py measures it at 100 to 100k sessions."""
    from sglang_agent.cache.node import AgentTreeNode

    cache, clock, ctl = env(pool=60_000)
    system = list(range(500, 600))
    for i in range(2000):
        run_turn(cache, ctl, f"s{i}", f"r{i}", system + [1000 + i])
    calls = []
    original = AgentTreeNode.set_steps
    monkeypatch.setattr(AgentTreeNode, "set_steps", lambda node, s, v: calls.append(node) or original(node, s, v))
    run_turn(cache, ctl, "s5", "again", system + [1005, 7])
    assert calls == []
    shared = cache.last_node("s5")
    while shared.parent is not cache.tree_core.root_node:
        shared = shared.parent  # the system prompt's node, which all 2,000 sessions run through
    assert list(shared.key)[:3] == [500, 501, 502]
    assert not shared.step_sessions and not shared.pin_deadlines
    ctl.declare_workflow(WorkflowDef("wf", (WorkflowAgent("a", "s7"), WorkflowAgent("b", "s8")), schedule=("a", "b")))
    calls.clear()
    run_turn(cache, ctl, "s7", "again7", system + [1007, 9])
    # Its path (the shared prefix, its old turn and the new one), and its role's prefix (the first
    # session of role "a": that same path, until another instance's session shares a part of it).
    assert len(calls) <= 2 * 3
    # Values of the two workflow sessions and of role a's prefix, not of 2,000 sessions.
    assert sum(shared.step_counts.values()) == 3


class FakeHost:
    """A host tier that reports the events a test sets, and the headroom each poll was given."""

    def __init__(self):
        self.jobs, self.events, self.polled_headroom = {}, HostEvents(), []

    def reload_s(self, tokens):
        return 0.001 * tokens / 100

    def room_tokens(self):
        return 10_000

    def offload(self, session_id, tokens, prefetch_at, keep_until):
        self.jobs[session_id] = (prefetch_at, keep_until)

    def prefetch_now(self, session_id):
        pass

    def turn_arrived(self, session_id):
        self.jobs.pop(session_id, None)

    def prefetch_prefix(self, session_id):
        return 0

    def forget(self, session_id):
        self.jobs.pop(session_id, None)

    def has_job(self, session_id):
        return session_id in self.jobs

    def poll(self, now, headroom_tokens):
        self.polled_headroom.append(headroom_tokens)
        events, self.events = self.events, HostEvents()
        return events

    def snapshot(self):
        return {"host_tier": "fake"}


def test_a_reloaded_session_is_protected_until_its_predicted_return(env):
    """Defect (issue "No lost work", 9c): the reloaded KV was unprotected and could be evicted again
    before the turn arrived. A reload the host tier reports back is pinned until the predicted
    return plus the grace; the resumed turn consumes it."""
    cache, clock, ctl = env(pool=400, resume_grace_s=2.0)
    host = ctl.host_tier = ctl.workflows.host_tier = FakeHost()
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=3)  # memory pressure: offload
    run_turn(cache, ctl, "a", "r1", range(60))
    answer = ctl.tool_start(ToolStart("a", "build", 20.0))
    assert answer["action"] == "offload" and answer["offload_reason"] == "requests_waiting"
    host.events = HostEvents(reloaded={"a": 25.0})  # back on the GPU; the tool returns ~25 s
    ctl.on_step()
    assert cache.pin_deadline("a") == 27.0 and ctl.stats.prefetches_protected == 1
    clock.now = 24.0
    ctl.bind("r2", InlineAgentHint("a"))  # the turn is here: the pin waits for it to finish
    assert cache.pin_deadline("a") is not None
    run_turn_end = insert(cache, list(range(60)) + [1])
    ctl.turn_finished(FakeReq("r2", run_turn_end.last_device_node, list(range(60)), 60))
    assert cache.pin_deadline("a") is None


def test_with_a_host_tier_a_pin_takes_no_memory_the_waiting_requests_need(env):
    """The policy's pin over a tool call too short to offload is a guess; with a host tier an
    eviction costs only a reload, so it yields to the waiting prompts (counted), while a pin the
    client asked for (an explicit TTL) is made as before."""
    cache, clock, ctl = env(pool=400)
    host = ctl.host_tier = ctl.workflows.host_tier = FakeHost()
    host.reload_s = lambda tokens: 1.0  # the tool is too short to be worth an offload
    run_turn(cache, ctl, "a", "r1", range(60))
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=1, waiting_tokens=cache.free_tokens() - 30)
    answer = ctl.tool_start(ToolStart("a", "bash", 1.0))
    assert answer["action"] == "drop" and "waiting requests" in answer["reason"], answer
    assert ctl.snapshot()["pins_refused_for_waiting_requests"] == 1 and cache.pin_deadline("a") is None
    clock.now += 1.0
    ctl.tool_end("a")
    run_turn(cache, ctl, "a", "r2", range(61))
    room = cache.free_tokens() - 70  # the queue's prompts and the session's 61 tokens both fit
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=1, waiting_tokens=room)
    second = ctl.tool_start(ToolStart("a", "bash", 1.0))
    assert second["action"] == "pin", (second["reason"], second)
    clock.now += 1.0
    ctl.tool_end("a")
    run_turn(cache, ctl, "a", "r3", range(62))
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=1, waiting_tokens=cache.free_tokens() - 30)
    assert ctl.tool_start(ToolStart("a", "bash", ttl_s=5.0))["action"] == "pin"  # asked for: made


def test_a_prefetch_never_takes_memory_the_waiting_requests_need(env):
    """A prefetch is a guess about a turn to come; a waiting request is here. The host tier polls
    with the headroom beyond the running requests' reserve and the waiting prompts, and a session
    reloaded into memory the queue needs is not pinned there (the reload stays an ordinary cached
    prefix that eviction may take for the queue)."""
    cache, clock, ctl = env(pool=400, resume_grace_s=2.0)
    host = ctl.host_tier = ctl.workflows.host_tier = FakeHost()
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=3)
    run_turn(cache, ctl, "a", "r1", range(60))
    assert ctl.tool_start(ToolStart("a", "build", 20.0))["action"] == "offload"
    free = cache.free_tokens()
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=2, waiting_tokens=120, decode_reserve_tokens=30)
    ctl.on_step()
    assert host.polled_headroom[-1] == free - 30 - 120
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=2, waiting_tokens=free)  # the queue needs it all
    host.events = HostEvents(reloaded={"a": 25.0})
    ctl.on_step()
    assert host.polled_headroom[-1] <= 0
    assert cache.pin_deadline("a") is None and ctl.stats.prefetches_protected == 0
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=0)  # the queue drained: the next reload is kept
    host.events = HostEvents(reloaded={"a": 25.0})
    ctl.on_step()
    assert cache.pin_deadline("a") == 27.0 and ctl.stats.prefetches_protected == 1


# ---- zero-hint agents: tool calls recognised, sessions found from the prompt ----------------------

def upstream_nodes(cache):
    from sglang_agent import upstream

    return list(upstream.all_nodes(cache.tree_core))


def unbound_turn(cache, ctl, rid, key, cached=0, tools=("bash",)):
    """A request with no hint at all: the scheduler sees it, it finishes, the HTTP layer reports
    the tool call it found in the answer."""
    ctl.request_entered(rid, list(key))
    result = insert(cache, key)
    ctl.turn_finished(FakeReq(rid, result.last_device_node, list(key), cached))
    return ctl.turn_outcome(rid, list(tools), None, False) if tools else None


def test_an_unbound_tool_call_turn_becomes_an_implicit_session_pinned_and_resumed(env):
    cache, clock, ctl = env(pool=400)
    system = list(range(500, 560))
    first = system + list(range(10))
    outcome = unbound_turn(cache, ctl, "r1", first)
    session_id = outcome["session_id"]
    assert session_id == "~r1" and outcome["tool_start"]["pinned_tokens"] == len(first)
    assert ctl.sessions[session_id].state is State.IN_TOOL and ctl.stats.tool_calls_detected == 1
    clock.now = 3.0
    # The next prompt extends the path (previous prompt + its answer + the tool's result).
    resumed = first + [77, 78, 79]
    ctl.request_entered("r2", resumed)
    assert ctl.rid_to_session["r2"] == session_id and ctl.sessions[session_id].state is State.RUNNING
    assert ctl.durations.samples("bash")[0] == pytest.approx(3.0)  # the tool's learned duration
    result = insert(cache, resumed)
    ctl.turn_finished(FakeReq("r2", result.last_device_node, resumed, len(first)))
    assert ctl.snapshot()["resumed_turns_with_hit"] == 1 and cache.pin_deadline(session_id) is None
    assert "bash" in ctl.snapshot()["tool_durations"]


def test_an_implicit_program_arrived_with_its_first_turn_for_program_fcfs(env):
    cache, clock, ctl = env(pool=400)
    clock.now = 10.0
    key = list(range(500, 560))
    ctl.request_entered("r1", list(key))
    clock.now = 14.0  # the first turn took 4 s; it ends in a tool call
    result = insert(cache, key)
    ctl.turn_finished(FakeReq("r1", result.last_device_node, list(key), 0))
    session_id = ctl.turn_outcome("r1", ["bash"], None, False)["session_id"]
    clock.now = 20.0
    ctl.request_entered("r2", key + [1, 2])
    assert ctl.program_arrival("r2") == 10.0  # not the turn's end, nor the resumed turn's arrival
    assert ctl.snapshot()["index_sizes"]["unbound_in_flight"] == 0
    # An unbound request that is dropped leaves nothing behind.
    ctl.request_entered("r3", [7, 7, 7])
    ctl.request_dropped("r3")
    assert ctl.snapshot()["index_sizes"]["unbound_in_flight"] == 0 and session_id in ctl.sessions


def test_two_conversations_sharing_a_system_prompt_stay_apart(env):
    cache, clock, ctl = env(pool=600)
    system = list(range(500, 560))
    a, b = system + [1, 2, 3], system + [9, 8, 7]
    sa = unbound_turn(cache, ctl, "a1", a)["session_id"]
    sb = unbound_turn(cache, ctl, "b1", b)["session_id"]
    assert sa != sb
    ctl.request_entered("b2", b + [5, 5])
    ctl.request_entered("a2", a + [6])
    assert ctl.rid_to_session == {"b2": sb, "a2": sa}
    # A third conversation with only the system prompt in common resumes neither.
    ctl.request_entered("c1", system + [4, 4, 4])
    assert "c1" not in ctl.rid_to_session


def test_a_prompt_that_diverges_before_the_previous_prompt_ended_resumes_nothing(env):
    cache, clock, ctl = env(pool=400)
    first = list(range(100, 140))
    session_id = unbound_turn(cache, ctl, "r1", first)["session_id"]
    ctl.request_entered("r2", first[:30] + [1, 2, 3])  # edits the middle of the conversation
    assert "r2" not in ctl.rid_to_session and ctl.sessions[session_id].state is State.IN_TOOL
    # A resumed prompt re-tokenizes the previous answer: the join token may differ, still resumed.
    ctl.request_entered("r3", first[:-1] + [999, 5])
    assert ctl.rid_to_session["r3"] == session_id


def test_no_tool_call_no_session_and_detection_off_is_upstream(env):
    cache, clock, ctl = env()
    unbound_turn(cache, ctl, "r1", range(20), tools=())
    assert ctl.snapshot()["sessions"] == 0
    cache2, clock2, off = env(detect_tool_calls=False)
    assert unbound_turn(cache2, off, "r1", range(20))["applied"] is False
    assert off.snapshot()["sessions"] == 0
    # A client's own cache_control still counts with detection off: it is an explicit hint.
    off.request_entered("r2", list(range(40, 60)))
    off.turn_finished(FakeReq("r2", insert(cache2, range(40, 60)).last_device_node, list(range(40, 60))))
    assert off.turn_outcome("r2", ["bash"], 60.0, False)["tool_start"]["ttl_s"] == 60.0
    assert off.sessions["~r2"].tool.tool_name == "cache_control"


def test_a_resumed_prompt_that_re_renders_the_answer_still_resumes(env):
    # The turn's answer is in the tree after its prompt; the client sends the call back in another
    # form (the chat template renders tool_calls, not the text the model wrote): the prompt diverges
    # right where the answer began, and still resumes the session (its previous prompt is covered).
    cache, clock, ctl = env(pool=400)
    prompt, answer = list(range(200, 240)), [7, 7, 7, 7]
    ctl.request_entered("r1", prompt)
    ctl.turn_finished(FakeReq("r1", insert(cache, prompt + answer).last_device_node, prompt))
    session_id = ctl.turn_outcome("r1", ["bash"], None, False)["session_id"]
    assert ctl.snapshot()["index_sizes"]["implicit_anchors"] == 1
    ctl.request_entered("r2", prompt + [8, 8, 8])
    assert ctl.rid_to_session["r2"] == session_id
    assert ctl.snapshot()["index_sizes"]["implicit_anchors"] == 0  # running: no longer waiting


def test_many_implicit_sessions_under_one_system_prompt_mark_only_their_own_nodes(env):
    cache, clock, ctl = env(pool=4000)
    system = list(range(1000, 1100))
    for i in range(50):
        unbound_turn(cache, ctl, f"r{i}", system + [i, i + 1, i + 2])
    marked = [n for n in upstream_nodes(cache) if n.resume_anchors]
    assert len(marked) >= 50 and all(len(n.resume_anchors) == 1 for n in marked)  # the system prompt's node carries none
    ctl.request_entered("x", system + [17, 18, 19, 5])
    assert ctl.rid_to_session["x"] == "~r17"


def test_explicit_hints_win_over_recognised_ones(env):
    cache, clock, ctl = env()
    # Explicit tool_start inline: the recognised call changes nothing.
    run_turn(cache, ctl, "s", "r1", range(30), tool=ToolStart("s", "pytest", 9.0))
    assert ctl.turn_outcome("r1", ["bash"], None, False)["applied"] is False
    assert ctl.sessions["s"].tool.tool_name == "pytest"
    ctl.tool_end("s")
    # Recognised first, explicit tool_start after: the client's hint replaces it (no 409).
    run_turn(cache, ctl, "s", "r2", list(range(30)) + [1])
    assert ctl.turn_outcome("r2", ["bash"], None, False)["applied"] is True
    calls = ctl.stats.tool_calls
    answer = ctl.tool_start(ToolStart("s", "pytest", 20.0))
    assert answer["ttl_s"] == pytest.approx(25.0) and ctl.sessions["s"].tool.tool_name == "pytest"
    assert ctl.stats.tool_calls == calls  # one tool call, not two


def test_several_calls_in_one_turn_use_the_slowest_tools_distribution(env):
    cache, clock, ctl = env()
    for d in (20.0, 22.0, 25.0):
        ctl.durations.observe("pytest", d)
    for d in (0.1, 0.2):
        ctl.durations.observe("ls", d)
    run_turn(cache, ctl, "s", "r1", range(30))
    ctl.turn_outcome("r1", ["ls", "pytest"], None, False)
    assert ctl.sessions["s"].tool.tool_name == "pytest"


def test_cache_control_pins_for_its_ttl_within_the_cap(env):
    cache, clock, ctl = env(pool=200, max_pinned_fraction=0.5)
    run_turn(cache, ctl, "s", "r1", range(40))
    answer = ctl.turn_outcome("r1", [], 300.0, False)["tool_start"]
    assert answer["ttl_s"] == 300.0 and answer["pinned_tokens"] == 40 and answer["reason"] == "TTL given by the client"
    run_turn(cache, ctl, "t", "r2", range(100, 180))
    assert ctl.turn_outcome("r2", [], 300.0, False)["tool_start"]["pinned_tokens"] == 0  # over the cap of 100


def test_continuums_last_step_closes_the_session_after_its_turn(env):
    cache, clock, ctl = env()
    ctl.bind("r1", InlineAgentHint("job:7", close_after_turn=True))
    ctl.request_entered("r1")
    result = insert(cache, range(25))
    ctl.turn_finished(FakeReq("r1", result.last_device_node, list(range(25))))
    assert "job:7" not in ctl.sessions


# ---- critical-path reservation ------------------------------------------------------------------

def fan_out_workflow(ctl, wf="dag"):
    """planner -> (w1, w2 -> w2b) -> writer: the critical path runs through w2."""
    agents = tuple(WorkflowAgent(a, f"{wf}/{a}") for a in ("planner", "w1", "w2", "w2b", "writer"))
    edges = (("planner", "w1"), ("planner", "w2"), ("w2", "w2b"), ("w1", "writer"), ("w2b", "writer"))
    return ctl.declare_workflow(WorkflowDef(wf, agents, edges=edges, dag=True))


def test_critical_agents_prefixes_are_evicted_after_every_other_unpinned_node(env):
    cache, clock, ctl = env(pool=200, reserve_fraction=0.3)
    fan_out_workflow(ctl)
    ctl.workflow_step(WorkflowStep("dag", "planner"))
    run_turn(cache, ctl, "dag/planner", "rp", range(0, 30))
    for agent, base in (("w1", 100), ("w2", 200)):
        ctl.workflow_step(WorkflowStep("dag", agent))
        run_turn(cache, ctl, f"dag/{agent}", f"r{agent}", range(base, base + 30))
    assert ctl.snapshot()["critical_workflows"] == 1
    assert cache.last_node("dag/w2").critical_sessions == {"dag/w2", "role:w2"}  # its role prompt too
    assert not cache.last_node("dag/w1").critical_sessions  # the shorter branch
    # Newer one-off prompts of other tenants, then pressure for all but 30 tokens: w1, running too
    # (KVFlow keeps it over LRU nodes), goes before w2 all the same; w2 is what stays.
    for i in range(3):
        insert(cache, [1000 + 100 * i + j for j in range(30)])
    cache.evict(EvictParams(num_tokens=150))
    assert match(cache, range(200, 230)).device_prefix_len == 30
    assert match(cache, range(100, 130)).device_prefix_len == 0
    assert all(match(cache, [1000 + 100 * i + j for j in range(30)]).device_prefix_len == 0 for i in range(3))
    # The workflow ends with its writer's turn: nothing is critical any more.
    ctl.workflow_step(WorkflowStep("dag", "w2b"))
    ctl.workflow_step(WorkflowStep("dag", "writer"))
    run_turn(cache, ctl, "dag/writer", "rwr", range(300, 310))
    assert ctl.snapshot()["critical_workflows"] == 0 and cache.critical_session_count() == 0
    assert not cache.last_node("dag/w2").critical_sessions


def test_the_reservation_holds_what_critical_agents_need_now_and_lends_the_rest(env):
    cache, clock, ctl = env(pool=1000, reserve_fraction=0.3)
    ctl.reservation.sizer.fraction = 0.3  # as after a busy stretch (the share grows from 5%)
    assert ctl.begin_admission_round(0) == 0  # no workflow: nothing held, the share is all lent
    fan_out_workflow(ctl)
    ctl.workflow_step(WorkflowStep("dag", "planner"))
    run_turn(cache, ctl, "dag/planner", "rp1", range(0, 40))
    ctl.tool_start(ToolStart("dag/planner", "search", expected_duration_s=30.0))
    assert ctl.begin_admission_round(0) == 0  # its tool returns in 30 s: nothing is held meanwhile
    clock.now += 29.5
    # Due within the stall bound: its next turn's estimate is held (the share caps it).
    assert ctl.begin_admission_round(0) == 300  # min(share 300, estimate 512)
    ctl.bind("side", InlineAgentHint("tenant"))
    ctl.request_entered("side")
    assert not ctl.may_admit("side", need_tokens=200, room_tokens=400)  # would leave 200 < 300
    assert ctl.may_admit("side", need_tokens=100, room_tokens=400)
    ctl.bind("crit", InlineAgentHint("dag/planner"))
    ctl.request_entered("crit")
    assert ctl.is_critical_request("crit") and not ctl.is_critical_request("side")
    assert ctl.begin_admission_round(120) == 120  # its request waits: exactly what it needs
    assert ctl.may_admit("crit", 120, 130)
    ctl.admitted("crit", 120)
    assert ctl.reservation.held == 0 and ctl.may_admit("side", 390, 400)
    # Held back again, but never longer than the stall bound.
    ctl.begin_admission_round(120)
    assert not ctl.may_admit("side", 390, 400)
    clock.now += 1.0
    assert ctl.may_admit("side", 390, 400)
    stats = ctl.snapshot()
    assert stats["requests_held_by_reservation"] == 1  # one request, counted once
    assert stats["reserved_tokens"] == 300 and stats["reserved_tokens_used"] == 120
    ctl.request_dropped("side")
    assert not ctl.reservation.held_back_rids


def test_the_reservation_is_off_by_default(env):
    cache, clock, ctl = env(pool=1000)
    fan_out_workflow(ctl)
    assert not ctl.reservation.enabled and ctl.begin_admission_round(500) == 0
    assert ctl.snapshot()["critical_workflows"] == 0 and ctl.may_admit("x", 999, 1000)


def test_pins_give_way_to_another_tenants_stalled_head_after_the_bound_if_they_block_it(env):
    """Defect (issue "Critical-path reservation", 1): with pins live and a request decoding near
    the pool's edge, other tenants got no prefill until the pins expired (24 s on the CPU server,
    1 s on upstream): pins gave way only when nothing ran."""
    cache, clock, ctl = env(pool=200)
    for s, base, duration in (("late", 0, 40.0), ("soon", 100, 10.0)):
        run_turn(cache, ctl, s, f"{s}1", range(base, base + 30))
        ctl.tool_start(ToolStart(s, "bash", duration))
    ctl.request_entered("newcomer")
    assert cache.free_tokens() == 140
    assert ctl.unblock_stalled_head("newcomer", need_tokens=150, reserve_tokens=20) == []  # not waited yet
    clock.now += 1.0
    # Running requests hold so much that even without the pins it would not fit: pins stay.
    assert ctl.unblock_stalled_head("newcomer", need_tokens=150, reserve_tokens=60) == []
    assert ctl.unblock_stalled_head("newcomer", need_tokens=150, reserve_tokens=20) == ["soon"]
    assert pinned(cache, "late") == 30 and ctl.snapshot()["pins_released_for_stalled_requests"] == 1
    assert ctl.unblock_stalled_head("newcomer", need_tokens=100, reserve_tokens=20) == []  # fits now
    # An agent session's turn waits for older programs' pins until their TTL (Continuum).
    ctl.bind("agent-turn", InlineAgentHint("younger-program"))
    ctl.request_entered("agent-turn")
    clock.now += 5.0
    assert ctl.unblock_stalled_head("agent-turn", need_tokens=150, reserve_tokens=20) == []
    assert pinned(cache, "late") == 30
