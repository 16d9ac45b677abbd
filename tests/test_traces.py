import json
from pathlib import Path

import pytest

from eval.traces.bfcl import CATEGORIES, load_bfcl
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
