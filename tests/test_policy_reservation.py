"""The critical-path reservation's pure rules (policy/reservation.py): the critical chain from the
frontier, the share's revision from KV usage, what is held and who may take memory."""

import pytest

from sglang_agent.policy.reservation import (
    REVISE_EVERY_STEPS, ReservationSizer, admits_other, critical_agents, held_tokens, remaining_depth,
    schedule_successors,
)

# planner -> (w1, w2 -> w2b) -> reviewer -> writer: the longest chain runs through w2.
AGENTS = ("planner", "w1", "w2", "w2b", "reviewer", "writer")
EDGES = {"planner": ("w1", "w2"), "w1": ("reviewer",), "w2": ("w2b",), "w2b": ("reviewer",),
         "reviewer": ("writer",), "writer": ()}


def test_remaining_depth_counts_the_longest_chain_to_a_sink():
    depth = remaining_depth(EDGES, set(AGENTS))
    assert depth == {"planner": 5, "w1": 3, "w2": 4, "w2b": 3, "reviewer": 2, "writer": 1}
    # Agents that will not run again do not count.
    assert remaining_depth(EDGES, {"w1", "reviewer", "writer"})["w1"] == 3


def test_the_critical_path_is_every_agent_without_slack_from_the_frontier():
    steps = {"planner": 0, "w1": 1, "w2": 1, "w2b": 2, "reviewer": 3, "writer": 4}
    assert critical_agents(AGENTS, EDGES, steps) == ("planner", "w2", "w2b", "reviewer", "writer")
    # The planner is done and both workers run: the longer branch is the critical one.
    steps = {"planner": None, "w1": 0, "w2": 0, "w2b": 1, "reviewer": 3, "writer": 4}
    assert critical_agents(AGENTS, EDGES, steps) == ("w2", "w2b", "reviewer", "writer")
    # w2's branch is done: w1 (still running) is on the critical path now.
    steps = {"planner": None, "w1": 0, "w2": None, "w2b": None, "reviewer": 1, "writer": 2}
    assert critical_agents(AGENTS, EDGES, steps) == ("w1", "reviewer", "writer")
    assert critical_agents(AGENTS, EDGES, {a: None for a in AGENTS}) == ()


def test_equal_branches_are_all_critical_and_a_cycle_gives_one_chain():
    edges = {"a": ("b", "c"), "b": ("d",), "c": ("d",), "d": ()}
    assert critical_agents(("a", "b", "c", "d"), edges, {"a": 0, "b": 1, "c": 1, "d": 2}) == ("a", "b", "c", "d")
    loop = {"x": ("y",), "y": ("x",)}
    assert critical_agents(("x", "y"), loop, {"x": 0, "y": 1}) == ("x", "y")


def test_a_schedule_is_one_chain_from_its_position():
    schedule = ("plan", "code", "test", "plan", "code")
    assert schedule_successors(schedule, 1) == {"code": ("test",), "test": ("plan",)}
    chain = critical_agents(("plan", "code", "test"), schedule_successors(schedule, 1), {"plan": 2, "code": 0, "test": 1})
    assert chain == ("plan", "code", "test")  # all of them, in declaration order


def test_the_share_moves_by_five_points_within_its_bounds_every_500_steps():
    sizer = ReservationSizer(0.2)
    assert sizer.fraction == pytest.approx(0.05)
    for _ in range(REVISE_EVERY_STEPS - 1):
        sizer.observe_step(0.9)
    assert sizer.fraction == pytest.approx(0.05)  # not revised before 500 steps
    for _ in range(REVISE_EVERY_STEPS * 10 + 1):
        sizer.observe_step(0.9)
    assert sizer.fraction == pytest.approx(0.2)  # capped at the max
    for _ in range(REVISE_EVERY_STEPS * 10):
        sizer.observe_step(0.3)
    assert sizer.fraction == pytest.approx(0.05)
    for _ in range(REVISE_EVERY_STEPS * 3):
        sizer.observe_step(0.5)  # between the thresholds: unchanged
    assert sizer.fraction == pytest.approx(0.05)
    assert ReservationSizer(0.02).fraction == pytest.approx(0.02)  # a max below 5% caps the start
    assert sizer.reserved_tokens(1000) == 50


def test_only_what_critical_agents_need_is_held_and_others_take_the_rest():
    assert held_tokens(500, 0) == 0  # nothing needed: the whole share is lent out
    assert held_tokens(500, 120) == 120
    assert held_tokens(500, 9000) == 500  # never more than the share
    assert admits_other(need_tokens=100, room_tokens=1000, held=0)
    assert admits_other(need_tokens=100, room_tokens=300, held=200)
    assert not admits_other(need_tokens=101, room_tokens=300, held=200)
