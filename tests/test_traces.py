import json
from pathlib import Path

import pytest

from eval.traces.bfcl import CATEGORIES, load_bfcl
from eval.traces.format import (
    Program, TraceFormatError, Turn, load_programs, program_from_dict, save_programs, with_poisson_arrivals,
)
from eval.traces.synthetic import coding_agent_programs


def test_round_trip_and_turn_inputs(tmp_path):
    program = Program("p", 0.0, [1, 2], [Turn([3], [4, 5], "bash", 1.5), Turn([6], [7])])
    save_programs([program], tmp_path / "t.jsonl")
    (loaded,) = load_programs(tmp_path / "t.jsonl")
    assert loaded == program
    assert loaded.turn_inputs() == [[1, 2, 3], [1, 2, 3, 4, 5, 6]]


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("{not json", "Expecting"),
        (json.dumps({"program_id": "p", "arrival_s": 0, "system_tokens": [1]}), "missing field"),
        (json.dumps({"program_id": "p", "arrival_s": -1, "system_tokens": [1], "turns": [{}]}), "arrival_s"),
        (json.dumps({"program_id": "p", "arrival_s": 0, "system_tokens": [1],
                     "turns": [{"append_tokens": [1], "output_tokens": ["x"]}]}), "output_tokens"),
        (json.dumps({"program_id": "p", "arrival_s": 0, "system_tokens": [1],
                     "turns": [{"append_tokens": [1], "output_tokens": [1], "tool_duration_s": -2}]}), "tool_duration_s"),
    ],
)
def test_malformed_trace_names_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"program_id": "ok", "arrival_s": 0, "system_tokens": [1],
                       "turns": [{"append_tokens": [], "output_tokens": [2]}]})
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(TraceFormatError, match=rf"bad.jsonl:2: .*{fragment}"):
        load_programs(path)


def test_bfcl_programs_follow_the_ground_truth():
    programs = load_bfcl("base", limit=3)
    first = programs[0]
    # multi_turn_base_0: 4 user turns with 3, 2, 1 and 4 calls -> 3+2+1+4 call steps + 4 answers.
    assert len(first.turns) == 14
    assert [t.tool_name for t in first.turns[:4]] == ["cd", "mkdir", "mv", "user"]
    assert first.turns[-1].tool_name is None
    assert len(first.system_tokens) > 1000  # the tool schemas
    # Programs with the same tool classes share their system prompt exactly.
    assert all(p.system_tokens for p in programs)


def test_synthetic_coding_agents_are_long_and_deterministic():
    a, b = coding_agent_programs(5, seed=3), coding_agent_programs(5, seed=3)
    assert [p.total_tokens for p in a] == [p.total_tokens for p in b]
    assert all(len(p.turns) >= 5 for p in a)
    assert all(p.system_tokens == a[0].system_tokens for p in a)


def test_poisson_arrivals_increase():
    programs = with_poisson_arrivals(coding_agent_programs(10), rate_per_s=2.0, seed=0)
    arrivals = [p.arrival_s for p in programs]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0


def test_bfcl_package_gives_the_same_programs_as_the_reference_copy():
    """The 800 programs read from the bfcl-eval package equal those the loader built from the
    reference copy before it moved to the package (frozen in tests/data: id, turn count, token
    totals per program). Failed before the move with FileNotFoundError on a bare clone."""
    frozen = json.loads((Path(__file__).parent / "data" / "bfcl_v4_multi_turn_programs.json").read_text())
    loaded = [[p.program_id, len(p.turns), p.total_tokens, len(p.system_tokens)]
              for category in CATEGORIES for p in load_bfcl(category)]
    assert len(loaded) == 800
    assert loaded == frozen["rows"]


def test_bfcl_traces_dir_option_reads_a_copy(tmp_path):
    """`data_dir` (--traces DIR) reads a user's copy with the package's layout."""
    import shutil

    from eval.traces.bfcl import package_data_dir

    src = Path(str(package_data_dir()))
    for name in ("BFCL_v4_multi_turn_base.json", "possible_answer", "multi_turn_func_doc"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, tmp_path / name)
    assert [p.total_tokens for p in load_bfcl("base", data_dir=tmp_path, limit=5)] == \
        [p.total_tokens for p in load_bfcl("base", limit=5)]
    with pytest.raises(FileNotFoundError, match="bfcl_eval/data"):
        load_bfcl("base", data_dir=tmp_path / "missing")


def dag_program(**changes) -> dict:
    """a -> (b, c) -> d as a JSON object: b has two turns (a tool call between), the rest one."""
    data = {
        "program_id": "g", "arrival_s": 0.0, "system_tokens": [9],
        "turns": [
            {"append_tokens": [], "output_tokens": [1, 2], "agent_id": "a"},
            {"append_tokens": [3], "output_tokens": [4], "tool_name": "search", "tool_duration_s": 1.0, "agent_id": "b"},
            {"append_tokens": [], "output_tokens": [5], "agent_id": "c"},
            {"append_tokens": [6], "output_tokens": [7], "agent_id": "b"},
            {"append_tokens": [], "output_tokens": [8], "agent_id": "d"},
        ],
        "agent_prefixes": {"a": [100], "b": [200], "c": [300], "d": [400]},
        "agent_deps": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
        "critical_path": ["a", "b", "d"],
        "agent_roles": {"a": "app/planner"},
    }
    data.update(changes)
    return data


def test_dag_program_round_trip_arrivals_and_turn_inputs(tmp_path):
    program = program_from_dict(dag_program())
    save_programs([program], tmp_path / "g.jsonl")
    (loaded,) = load_programs(tmp_path / "g.jsonl")
    assert loaded == program and loaded.agent_deps["d"] == ["b", "c"]
    (arrived,) = with_poisson_arrivals([program], rate_per_s=1.0, seed=0)
    assert arrived.arrival_s > 0
    assert (arrived.agent_deps, arrived.critical_path, arrived.agent_roles) == (
        program.agent_deps, program.critical_path, program.agent_roles)
    assert program.role("a") == "app/planner" and program.role("b") == "b"
    # First turns: prefix + task + the predecessors' last outputs (in agent_deps order) + append;
    # b's second turn extends b's own context.
    assert program.turn_inputs() == [
        [100, 9], [200, 9, 1, 2, 3], [300, 9, 1, 2], [200, 9, 1, 2, 3, 4, 6], [400, 9, 7, 5]]


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"agent_deps": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "x"]}}, "unknown agent"),
        ({"agent_deps": {"a": ["d"], "b": ["a"], "c": ["a"], "d": ["b", "c"]}}, "cycle"),
        ({"agent_deps": {"a": [], "b": ["a"], "c": ["a"]}}, "without an agent_deps entry"),
        ({"agent_deps": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}}, "run no turn"),
        ({"agent_deps": {"a": [], "b": "a", "c": ["a"], "d": ["b", "c"]}}, "lists of agent ids"),
        ({"agent_prefixes": None}, "needs agent_prefixes"),
        ({"critical_path": ["a", "d"]}, "chain"),
        ({"critical_path": ["b", "d"]}, "chain"),
        ({"agent_roles": {"z": "r"}}, "unknown agent"),
        ({"agent_deps": None}, "need agent_deps"),
    ],
)
def test_malformed_dag_program_is_refused(changes, fragment):
    with pytest.raises(TraceFormatError, match=fragment):
        program_from_dict(dag_program(**changes))


def test_dag_agent_must_end_on_its_last_turn():
    data = dag_program()
    data["turns"][1]["tool_name"] = None  # b would end before its second turn
    with pytest.raises(TraceFormatError, match="every turn but its last"):
        program_from_dict(data)
    data = dag_program()
    data["turns"][4]["tool_name"] = "bash"  # d's last turn calls a tool nothing answers
    with pytest.raises(TraceFormatError, match="every turn but its last"):
        program_from_dict(data)


def test_dag_workflows_shape_roles_and_critical_path():
    from dataclasses import asdict

    from eval.traces.synthetic import dag_workflows, heaviest_chain

    programs = dag_workflows(24, seed=1)
    assert [p.total_tokens for p in programs] == [p.total_tokens for p in dag_workflows(24, seed=1)]
    for p in programs:
        assert program_from_dict(asdict(p)) == p  # valid by the format's own checks
        workers = p.agent_deps["reviewer"]
        assert 2 <= len(workers) <= 4 and all(p.agent_deps[w] == ["planner"] for w in workers)
        assert p.agent_deps["writer"] == ["reviewer"] and p.critical_path[0] == "planner"
        assert p.critical_path[-2:] == ["reviewer", "writer"]
    # Parallel branches of different lengths, and the critical path takes the heaviest worker.
    assert any(len({len(p.agent_turns()[w]) for w in p.agent_deps["reviewer"]}) > 1 for p in programs)
    p = programs[0]
    work = {w: sum(t.tool_duration_s + 0.02 * len(t.output_tokens) for t in p.turns if t.agent_id == w)
            for w in p.agent_deps["reviewer"]}
    assert p.critical_path[1] == max(work, key=work.get) and heaviest_chain(p) == p.critical_path
    # Instances of one app share their role prompts; different apps do not.
    by_role = {}
    for p in programs:
        for agent in p.agent_deps:
            by_role.setdefault(p.role(agent), set()).add(tuple(p.agent_prefixes[agent]))
    assert all(len(prompts) == 1 for prompts in by_role.values())
    assert len({p.role("planner") for p in programs}) > 1
    assert all(1000 <= len(next(iter(v))) <= 6000 for v in by_role.values())


def test_tokencake_dag_has_the_shape_of_tokencakes_experiment():
    from dataclasses import asdict

    from eval.traces.synthetic import heaviest_chain, tokencake_dag

    a, b = tokencake_dag(2, seed=0)
    assert program_from_dict(asdict(a)) == a
    assert len(a.turns) == 27 and len(a.agent_deps) == 9  # 27 LLM calls
    assert sum(len(t.output_tokens) for t in a.turns) == 6464  # every node's whole max_tokens
    assert {len(t.output_tokens) for t in a.turns} == {128, 200, 400}
    assert a.agent_deps["reviser_1"] == ["reviewer_1", "reviewer_2"] and a.agent_deps["verifier"] == ["reviewer_2"]
    assert [t.tool_duration_s for t in a.turns if t.agent_id == "programmer_2"] == [8.0, 0.0, 0.0]
    assert a.critical_path == ["planner", "programmer_1", "reviewer_1", "reviser_1"] == heaviest_chain(a)
    assert a.agent_prefixes == b.agent_prefixes and a.system_tokens != b.system_tokens  # own task each
