import json

import pytest

from eval.traces.bfcl import load_bfcl
from eval.traces.format import Program, TraceFormatError, Turn, load_programs, save_programs, with_poisson_arrivals
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
