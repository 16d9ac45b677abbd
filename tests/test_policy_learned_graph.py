"""Workflow graphs learned with no declaration (policy/learned_graph.py): the interval order of one
instance's runs, role transitions across instances, trust, decay, late tool calls, bounds."""

from sglang_agent.policy.learned_graph import LearnedRun, TransitionGraph

FAN_OUT = ("planner", ("worker_1", "worker_2", "worker_3"), "reviewer", "writer")


def run_instance(graph: TransitionGraph, wf_id: str, worker_order=("worker_1", "worker_3", "worker_2")) -> LearnedRun:
    """planner -> 3 parallel workers (stepping in `worker_order`, ending in reverse) -> reviewer -> writer."""
    run = LearnedRun(wf_id)

    def step(agent):
        for pred in run.step(agent, agent):
            if pred not in run.counted:
                run.counted.add(pred)
                graph.observe_completion(run.roles[pred])
            graph.observe_transition(run.roles[pred], agent)

    step("planner")
    run.end_run("planner")
    for w in worker_order:
        step(w)
    for w in reversed(worker_order):
        run.end_run(w)
    step("reviewer")
    run.end_run("reviewer")
    step("writer")
    run.end_run("writer")
    for agent in run.uncounted_ends():
        graph.observe_completion(run.roles[agent])
    return run


def test_parallel_workers_follow_the_planner_and_the_join_follows_every_worker():
    run = LearnedRun("w")
    assert run.step("planner", "planner") == []
    run.end_run("planner")
    # The workers interleave: each starts after the planner ended and before any worker ended.
    assert run.step("worker_2", "worker_2") == ["planner"]
    assert run.step("worker_1", "worker_1") == ["planner"]
    assert run.step("worker_3", "worker_3") == ["planner"]
    run.end_run("worker_2")
    run.end_run("worker_1")
    run.end_run("worker_3")
    # The reviewer follows the three workers, not the planner (each worker ran wholly in between).
    assert run.step("reviewer", "reviewer") == ["worker_1", "worker_2", "worker_3"]


def test_a_run_that_ran_wholly_in_between_hides_the_earlier_one():
    run = LearnedRun("w")
    run.step("a", "a")
    run.end_run("a")
    run.step("b", "b")
    run.end_run("b")
    assert run.step("c", "c") == ["b"]


def test_nothing_is_trusted_after_one_instance_and_the_graph_predicts_after_two():
    graph = TransitionGraph(min_observations=2, min_probability=0.5)
    run_instance(graph, "i1")
    fresh = LearnedRun("i2")
    fresh.step("planner", "planner")
    agents, roles = fresh.steps_to_execution(graph)
    assert agents == {"planner": 0} and roles == {"planner": 0}  # not sure: nothing predicted (LRU)
    run_instance(graph, "i2", worker_order=("worker_2", "worker_1", "worker_3"))
    third = LearnedRun("i3")
    third.step("planner", "planner")
    assert third.steps_to_execution(graph)[1] == {"planner": 0, "worker_1": 1, "worker_2": 1, "worker_3": 1,
                                                   "reviewer": 2, "writer": 3}
    third.end_run("planner")
    # Nothing runs: the planner's followers are next (1), the planner itself is not needed again.
    agents, roles = third.steps_to_execution(graph)
    assert agents == {"planner": None} and roles["worker_2"] == 1 and "planner" not in roles
    assert sorted(graph.successors("planner")) == ["worker_1", "worker_2", "worker_3"]
    assert graph.is_last("writer") and not graph.is_last("planner")


def test_the_writer_ends_a_run_once_the_graph_knows_it_is_last():
    graph = TransitionGraph(min_observations=2)
    first = run_instance(graph, "i1")
    assert not first.finished(graph)  # one run of the writer: not sure yet
    run_instance(graph, "i2")
    assert run_instance(graph, "i3").finished(graph)


def test_a_branch_that_changes_is_followed_after_a_few_instances_decay():
    graph = TransitionGraph(min_observations=2, min_probability=0.5, decay=0.3)
    for _ in range(5):
        graph.observe_completion("router")
        graph.observe_transition("router", "search")
    assert graph.successors("router") == ["search"]
    changed_after = None
    for n in range(1, 10):
        graph.observe_completion("router")
        graph.observe_transition("router", "code")
        if graph.successors("router") == ["code"]:
            changed_after = n
            break
    assert changed_after is not None and changed_after <= 3


def test_a_tool_call_recognised_after_the_turn_ended_reopens_the_run():
    run = LearnedRun("w")
    run.step("a", "a")
    run.end_run("a")
    assert run.reopen("a") and run.running() == {"a"}
    run.end_run("a")
    run.step("b", "b")
    assert not run.reopen("a")  # b followed it: too late


def test_a_step_of_a_running_agent_changes_nothing_and_the_graph_is_bounded():
    run = LearnedRun("w")
    run.step("a", "a")
    assert run.step("a", "a") == [] and run.seq == 1
    graph = TransitionGraph(max_roles=8)
    for i in range(100):
        graph.observe_completion(f"r{i}")
        graph.observe_transition(f"r{i}", f"r{i + 1}")
    assert len(graph.rows) == 8 and "r99" in graph.rows
