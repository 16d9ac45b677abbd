import pytest

from sglang_agent.policy.workflow import Workflow, WorkflowError, node_steps


def test_chain_counts_down_and_finished_agents_are_never_needed():
    wf = Workflow.from_graph("w", ["plan", "code", "test"], [("plan", "code"), ("code", "test")])
    assert wf.steps_to_execution() == {"plan": 0, "code": 1, "test": 2}
    wf.advance("plan")
    wf.advance("code")
    assert wf.steps_to_execution() == {"plan": None, "code": 0, "test": 1}


def test_fan_out_runs_in_parallel_and_a_join_waits_for_all():
    """Defect (issue "Multi-agent workflows as real DAGs", 1): the workflow tracked one current
    agent, so after plan -> a the step of b (a parallel sibling) got 409 "no edge 'a' -> 'b'" and
    b's steps were None (never again) while it was about to run."""
    wf = Workflow.from_graph("w", ["plan", "a", "b", "merge"],
                             [("plan", "a"), ("plan", "b"), ("a", "merge"), ("b", "merge")], dag=True)
    wf.advance("plan")
    assert wf.steps_to_execution() == {"plan": 0, "a": 1, "b": 1, "merge": 2}
    wf.advance("a")
    # b is still to run (1); the join waits for it (AND: max + 1).
    assert wf.steps_to_execution() == {"plan": None, "a": 0, "b": 1, "merge": 2}
    wf.advance("b")
    assert wf.running() == {"a", "b"} and wf.steps_to_execution() == {"plan": None, "a": 0, "b": 0, "merge": 1}
    wf.advance("merge")
    assert wf.steps_to_execution() == {"plan": None, "a": None, "b": None, "merge": 0}
    assert wf.at_last_step and wf.turn_ended("merge")


def test_three_way_fan_out_every_worker_steps_and_the_join_may_start_early():
    agents = ["planner", "worker_1", "worker_2", "worker_3", "reviewer", "writer"]
    edges = [("planner", w) for w in agents[1:4]] + [(w, "reviewer") for w in agents[1:4]] + [("reviewer", "writer")]
    wf = Workflow.from_graph("w", agents, edges, dag=True)
    for agent in ("planner", "worker_1", "worker_3", "worker_2"):
        wf.advance(agent)  # any order of the parallel workers
    assert wf.steps_to_execution()["reviewer"] == 1 and wf.steps_to_execution()["writer"] == 2
    with pytest.raises(WorkflowError, match="writer"):
        wf.check_step("writer")  # nothing before it ran
    wf.advance("reviewer")
    wf.advance("writer")
    assert wf.turn_ended("writer")


def test_parallel_last_agents_end_the_workflow_when_the_last_of_them_ends():
    wf = Workflow.from_graph("w", ["plan", "a", "b"], [("plan", "a"), ("plan", "b")], dag=True)
    wf.advance("plan")
    wf.advance("a")
    assert not wf.turn_ended("a")  # b has not run yet
    wf.advance("b")
    assert wf.turn_ended("b")  # a's turn had already ended


def test_or_join_in_a_graph_with_cycles():
    wf = Workflow.from_graph("w", ["plan", "code", "test"],
                             [("plan", "code"), ("plan", "test"), ("code", "test"), ("test", "plan")])
    wf.advance("plan")
    wf.advance("code")
    # test is ready (plan and code ran since it last ran); plan follows test (min + 1).
    assert wf.steps_to_execution() == {"plan": 2, "code": 0, "test": 1}


def test_loop_back_to_planner():
    wf = Workflow.from_graph("w", ["plan", "code", "test"],
                             [("plan", "code"), ("code", "test"), ("test", "plan")])
    wf.advance("plan")
    wf.advance("code")
    wf.advance("test")
    assert wf.steps_to_execution() == {"plan": 1, "code": 2, "test": 0}
    with pytest.raises(WorkflowError, match="no edge"):
        wf.check_step("code")


def test_schedule_with_repeats():
    wf = Workflow.from_schedule("w", ["A", "B", "C"], ["A", "B", "C", "A", "B"])
    assert wf.steps_to_execution() == {"A": 0, "B": 1, "C": 2}
    for agent in "ABC":
        wf.advance(agent)
    assert wf.steps_to_execution() == {"A": 1, "B": 2, "C": 0}
    wf.advance("A")
    assert wf.steps_to_execution() == {"A": 0, "B": 1, "C": None}
    with pytest.raises(WorkflowError, match="step 4"):
        wf.check_step("C")


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: Workflow.from_graph("w", ["a", "b"], [("a", "b"), ("b", "a")], dag=True), "cycle"),
        (lambda: Workflow.from_graph("w", ["a"], [("a", "zz")]), "unknown agent"),
        (lambda: Workflow.from_graph("w", [], []), "at least one"),
        (lambda: Workflow.from_graph("w", ["a", "a"], []), "unique"),
        (lambda: Workflow.from_schedule("w", ["a"], ["a", "b"]), "unknown agent"),
        (lambda: Workflow.from_schedule("w", ["a"], []), "empty"),
    ],
)
def test_bad_definitions(build, fragment):
    with pytest.raises(WorkflowError, match=fragment):
        build()


def test_steps_must_follow_the_graph_and_failed_steps_change_nothing():
    wf = Workflow.from_graph("w", ["plan", "code"], [("plan", "code")])
    with pytest.raises(WorkflowError, match="entry"):
        wf.advance("code")
    assert wf.last_run == {} and wf.running() == set()
    with pytest.raises(WorkflowError, match="unknown agent"):
        wf.advance("ghost")


def test_shared_prefix_takes_minimum():
    assert node_steps({"s_plan": 3, "s_code": 1}, {"s_plan", "s_code", "chat"}) == 1
    assert node_steps({"s_plan": 3}, {"chat"}) is None


def test_a_workflow_ends_after_its_last_step():
    chain = Workflow.from_graph("g", ["a", "b"], [("a", "b")], dag=True)
    chain.advance("a")
    assert not chain.at_last_step
    chain.advance("b")
    assert chain.at_last_step and chain.steps_to_execution() == {"a": None, "b": 0}
    chain.end()
    assert chain.steps_to_execution() == {"a": None, "b": None}
    loop = Workflow.from_graph("l", ["p", "c"], [("p", "c"), ("c", "p")])
    loop.advance("p")
    loop.advance("c")
    assert not loop.at_last_step  # a loop back to the planner never reaches a last step
    sched = Workflow.from_schedule("s", ["x", "y"], ["x", "y"])
    sched.advance("x")
    sched.advance("y")
    assert sched.at_last_step
