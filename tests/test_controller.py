"""AgentController over a CPU AgentRadixCache with a fake clock: the hint state machine."""

from dataclasses import dataclass, field

import pytest

from sglang_agent.config import AgentServerArgs
from sglang_agent.controller import AgentController, LoadSnapshot
from sglang_agent.server.hints import HintError, InlineAgentHint, ToolStart
from test_agent_radix_cache import insert, make_cache


@dataclass
class FakeReq:
    rid: str
    last_node: int
    origin_input_ids: list = field(default_factory=list)
    cached_tokens: int = 0


def setup(pool=200, **args):
    cache, clock = make_cache(pool)
    controller = AgentController(cache, AgentServerArgs(**args), clock)
    return cache, clock, controller


def run_turn(cache, controller, session, rid, key, cached=0, tool=None):
    controller.bind(rid, InlineAgentHint(session, tool))
    result = insert(cache, key)
    controller.on_turn_finished(FakeReq(rid, result.last_device_node, list(key), cached), True)


def test_tool_call_pins_and_resume_counts_hit():
    cache, clock, ctl = setup()
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


def test_bad_hints_change_nothing():
    cache, clock, ctl = setup()
    run_turn(cache, ctl, "a", "r1", range(10))
    before = ctl.snapshot()
    with pytest.raises(HintError) as e:
        ctl.tool_end("a")
    assert e.value.status == 409
    with pytest.raises(HintError) as e:
        ctl.tool_start(ToolStart("ghost", "bash"))
    assert e.value.status == 404
    with pytest.raises(HintError) as e:
        ctl.close("ghost")
    assert e.value.status == 404
    ctl.tool_start(ToolStart("a", "bash"))
    with pytest.raises(HintError) as e:
        ctl.tool_start(ToolStart("a", "bash"))
    assert e.value.status == 409
    pinned = ctl.snapshot()["pinned_tokens"]
    ctl.bind("r2", InlineAgentHint("b"))
    with pytest.raises(HintError) as e:
        ctl.bind("r2", InlineAgentHint("a"))
    assert e.value.status == 409
    assert before["pinned_tokens"] == 0 and ctl.snapshot()["pinned_tokens"] == pinned
    assert ctl.snapshot()["tool_calls"] == 1 and ctl.sessions["a"].tool is not None


def test_inline_tool_start_pins_when_turn_ends():
    cache, clock, ctl = setup()
    run_turn(cache, ctl, "a", "r1", range(30), tool=ToolStart("a", "search", 1.0))
    assert cache.session_pinned_tokens("a") == 30
    assert ctl.sessions["a"].tool.tool_name == "search"


def test_tool_start_during_running_turn_is_deferred():
    cache, clock, ctl = setup()
    ctl.bind("r1", InlineAgentHint("a"))
    assert ctl.tool_start(ToolStart("a", "bash", 1.0))["deferred"] is True
    result = insert(cache, range(20))
    ctl.on_turn_finished(FakeReq("r1", result.last_device_node, list(range(20))), True)
    assert cache.session_pinned_tokens("a") == 20


def test_tool_that_never_returns_frees_at_ttl():
    cache, clock, ctl = setup()
    run_turn(cache, ctl, "a", "r1", range(30))
    ttl = ctl.tool_start(ToolStart("a", "bash", 2.0))["ttl_s"]
    clock.now = ttl + 0.01
    assert ctl.snapshot()["pinned_tokens"] == 0
    assert ctl.tool_end("a")["pin_expired_before_return"] is True
    assert ctl.snapshot()["pins_expired_before_tool_end"] == 1


def test_close_returns_pinned_tokens_to_zero():
    cache, clock, ctl = setup()
    for s in ("a", "b"):
        run_turn(cache, ctl, s, f"{s}1", [ord(s)] + list(range(20)))
        ctl.tool_start(ToolStart(s, "bash", 5.0))
    assert ctl.snapshot()["pinned_tokens"] == 42  # 20 tokens shared, pinned once
    ctl.close("a")
    ctl.close("b")
    assert ctl.snapshot()["pinned_tokens"] == 0 and ctl.snapshot()["sessions"] == 0


def test_pin_cap_displaces_sooner_pin_and_refuses_oversize():
    cache, clock, ctl = setup(pool=100, max_pinned_fraction=0.5)
    run_turn(cache, ctl, "a", "a1", range(0, 30))
    ctl.tool_start(ToolStart("a", "t", 1.0))
    run_turn(cache, ctl, "b", "b1", range(100, 130))
    answer = ctl.tool_start(ToolStart("b", "t", 10.0))
    assert answer["displaced_sessions"] == ["a"] and ctl.snapshot()["pinned_tokens"] == 30
    run_turn(cache, ctl, "c", "c1", range(200, 260))
    assert ctl.tool_start(ToolStart("c", "t", 1.0))["ttl_s"] == 0.0  # 60 tokens > cap of 50
    assert ctl.snapshot()["pins_refused"] == 1


def test_busy_server_shortens_or_skips_the_pin():
    cache, clock, ctl = setup(pool=100)
    ctl.load_probe = lambda: LoadSnapshot(waiting_requests=50, waiting_tokens=0)
    run_turn(cache, ctl, "a", "r1", range(40))
    answer = ctl.tool_start(ToolStart("a", "slow_tool", 30.0))
    assert answer["ttl_s"] == 0.0 and answer["pinned_tokens"] == 0


def test_program_arrival_is_the_first_turn():
    cache, clock, ctl = setup()
    run_turn(cache, ctl, "a", "r1", range(5))
    clock.now = 9.0
    ctl.bind("r2", InlineAgentHint("a"))
    assert ctl.program_arrival("r2") == 0.0
    assert ctl.program_arrival("unrelated") is None


from sglang.srt.mem_cache.base_prefix_cache import EvictParams  # noqa: E402

from sglang_agent.server.hints import WorkflowAgent, WorkflowDef, WorkflowStep  # noqa: E402
from test_agent_radix_cache import match  # noqa: E402


def three_agent_workflow(ctl, **kw):
    agents = tuple(WorkflowAgent(a, f"s_{a}") for a in ("plan", "code", "test"))
    return ctl.declare_workflow(WorkflowDef("wf", agents, schedule=("plan", "code", "test", "plan", "code"), **kw))


def test_workflow_steps_reach_the_tree_and_drive_eviction():
    cache, clock, ctl = setup(pool=100)
    three_agent_workflow(ctl)
    prefixes = {"plan": range(0, 30), "code": range(100, 130), "test": range(200, 230)}
    for agent in ("plan", "code", "test"):
        ctl.workflow_step(WorkflowStep("wf", agent))
        run_turn(cache, ctl, f"s_{agent}", f"r_{agent}", prefixes[agent])
    # test is running (0 steps), plan is due in 1 step, code in 2. LRU would drop plan (oldest).
    node = cache._live_node(cache._session_last_node["s_plan"])
    assert node.steps_to_execution == 1
    cache.evict(EvictParams(num_tokens=20))
    assert match(cache, prefixes["plan"]).device_prefix_len == 30
    assert match(cache, prefixes["code"]).device_prefix_len == 0
    assert match(cache, prefixes["test"]).device_prefix_len == 30


def test_workflow_errors_change_nothing():
    cache, clock, ctl = setup()
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
    assert ctl.workflows["wf"].position == -1 and set(ctl.workflows) == {"wf"}


def test_inline_workflow_step_rejected_before_binding():
    cache, clock, ctl = setup()
    three_agent_workflow(ctl)
    with pytest.raises(HintError):
        ctl.bind("r1", InlineAgentHint("s_code", workflow_step=WorkflowStep("wf", "code")))
    assert "r1" not in ctl.rid_to_session and "s_code" not in ctl.sessions
    ctl.bind("r1", InlineAgentHint("s_plan", workflow_step=WorkflowStep("wf", "plan")))
    assert ctl.workflows["wf"].position == 0


def test_pin_is_released_once_the_resumed_turn_ends():
    cache, clock, ctl = setup()
    run_turn(cache, ctl, "a", "r1", range(30))
    ctl.tool_start(ToolStart("a", "bash", 5.0))
    clock.now = 1.0
    run_turn(cache, ctl, "a", "r2", list(range(30)) + [9], cached=30)  # last turn: no tool after
    assert ctl.snapshot()["pinned_tokens"] == 0


def test_last_agents_finished_turn_ends_the_workflow_and_frees_its_rank():
    """Regression: the last agent kept "runs now" (0 steps) forever once a workflow was over,
    so finished workflows' prefixes outranked every live workflow's under KVFlow eviction."""
    cache, clock, ctl = setup(pool=200)
    three_agent_workflow(ctl)
    prefixes = {"plan": range(0, 30), "code": range(100, 130), "test": range(200, 230)}
    for agent in ctl.workflows["wf"].schedule:
        ctl.workflow_step(WorkflowStep("wf", agent))
        # Every turn but the last ends in a tool call (the result goes to the next agent).
        last = ctl.workflows["wf"].at_last_step
        run_turn(cache, ctl, f"s_{agent}", f"r_{agent}{clock()}", prefixes[agent],
                 tool=None if last else ToolStart(f"s_{agent}", "handoff", 1.0))
        clock.now += 1
        if not last:
            assert not ctl.workflows["wf"].ended
            ctl.tool_end(f"s_{agent}")
    assert "wf" not in ctl.workflows and not ctl.agent_sessions and not ctl.session_roles  # nothing left behind
    assert ctl.snapshot()["workflows"] == 0
    assert all(cache._live_node(cache._session_last_node[f"s_{a}"]).steps_to_execution is None for a in prefixes)
    with pytest.raises(HintError) as e:
        ctl.workflow_step(WorkflowStep("wf", "code"))
    assert e.value.status == 409 and "ended" in e.value.reason


def test_unbind_forgets_a_refused_request_and_the_session_it_created():
    cache, clock, ctl = setup()
    ctl.bind("r-new", InlineAgentHint("fresh", ToolStart("fresh", "bash", 1.0)))
    assert ctl.unbind("r-new")["unbound"] and "fresh" not in ctl.sessions and "r-new" not in ctl.rid_to_session
    run_turn(cache, ctl, "old", "r1", range(40))
    ctl.bind("r2", InlineAgentHint("old", ToolStart("old", "bash", 1.0)))
    ctl.unbind("r2")
    assert ctl.sessions["old"].running_rids == set() and ctl.sessions["old"].pending_tool is None
    assert ctl.tool_start(ToolStart("old", "bash", 1.0)).get("deferred") is None  # not waiting on r2
    assert ctl.unbind("r2") == {"rid": "r2", "unbound": False}  # idempotent


def test_a_session_in_two_workflows_is_needed_as_soon_as_either_needs_it():
    cache, clock, ctl = setup()
    run_turn(cache, ctl, "shared", "r0", range(30))
    ctl.declare_workflow(WorkflowDef("w1", (WorkflowAgent("a", "w1-a"), WorkflowAgent("tool", "shared")),
                                     schedule=("a", "a", "a", "tool")))
    node = cache._live_node(cache._session_last_node["shared"])
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
