"""The anchors' settings and the targets' arithmetic (eval/anchors.py, eval/targets.py,
eval/saturation.py, eval/traces/synthetic.py kvflow_chains), by hand and on a quick run."""

from __future__ import annotations

import csv

import pytest

from eval.anchors import warm_instance_latency_s
from eval.saturation import saturation_rate
from eval.sim.engine import ProgramResult, SimResult, TurnRecord
from eval.targets import Point, report
from eval.traces.synthetic import kvflow_chains


def test_kvflow_chains_have_the_papers_request_shape():
    (program,) = kvflow_chains(1, rounds=2, agents=3, fixed_prompt_tokens=50, dynamic_tokens=4, output_tokens=4)
    prompts = program.turn_inputs()
    assert [len(p) for p in prompts] == [50 + 4] * 6  # fixed prompt + dynamic part, every step
    # The dynamic part is the previous step's output; each round reuses its agents' fixed prompts.
    assert prompts[1][50:] == program.turns[0].output_tokens
    assert prompts[3][:50] == prompts[0][:50] and prompts[4][:50] != prompts[3][:50]
    assert program.agent_deps["r1/agent0"] == ["r0/agent2"] and program.role("r1/agent0") == "agent0"
    one, two = kvflow_chains(2, rounds=1, agents=2, fixed_prompt_tokens=10, shared_agents=False)
    assert one.agent_prefixes["r0/agent0"] != two.agent_prefixes["r0/agent0"]  # each workflow its own agents


def test_saturation_is_the_first_load_past_twice_the_idle_jct():
    assert saturation_rate({0.5: 10.0, 1.0: 15.0, 2.0: 20.0, 4.0: 21.0, 8.0: 90.0}) == 4.0
    assert saturation_rate({0.5: 10.0, 1.0: 19.0}) is None


def test_warm_latency_leaves_out_each_programs_first_instance():
    def rec(agent, arrival, finish):
        return TurnRecord("p", 0, arrival, finish_s=finish, agent_id=agent)

    turns = [rec("r0/agent0", 0.0, 5.0), rec("r0/agent1", 5.0, 9.0), rec("r1/agent0", 9.0, 10.0),
             rec("r1/agent1", 10.0, 12.0), rec("r2/agent0", 12.0, 13.0), rec("r2/agent1", 13.0, 16.0)]
    result = SimResult("x", [ProgramResult("p", 0.0, 16.0, turns)], 16.0)
    assert warm_instance_latency_s(result) == pytest.approx((3.0 + 4.0) / 2)


def test_targets_report_says_met_or_not(capsys):
    points = [Point("bfcl", 0.5, 10.0, 10.0), Point("bfcl", 2.0, 30.0, 15.0), Point("bfcl", 4.0, 50.0, 40.0),
              Point("coding", 0.1, 10.0, 11.0), Point("coding", 0.2, 12.0, 11.0)]
    rows = report(points, [])
    out = capsys.readouterr().out
    assert "bfcl: HiCache saturates at 2/s" in out and "ours 2.00x (target >= 1.5x: met)" in out
    assert "coding: HiCache does not saturate" in out and "NOT met" in out  # 10/11 at 0.1/s
    minimum = {r["workload"]: r for r in rows if r["target"] == "minimum over loads"}
    assert minimum["bfcl"]["ratio"] == pytest.approx(1.0) and minimum["bfcl"]["met"]
    assert minimum["coding"]["ratio"] == pytest.approx(10 / 11) and not minimum["coding"]["met"]


def test_quick_anchors_write_every_kvflow_comparison(tmp_path):
    from eval import anchors

    anchors.main(["--quick", "--only", "kvflow", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "anchors.csv")))
    assert (tmp_path / "anchors.png").stat().st_size > 0
    compared = {(r["policy"], r["baseline"]) for r in rows}
    assert {("ours", "sglang-hicache"), ("ours", "sglang-lru"), ("sglang-hicache", "sglang-lru")} <= compared
    assert any(r["paper"] == "1.83x" for r in rows) and any(r["paper"] == "2.19x" for r in rows)
    for r in rows:
        assert float(r["ratio"]) == pytest.approx(float(r["baseline_jct_s"]) / float(r["policy_jct_s"]))
        assert float(r["policy_jct_s"]) > 0


def test_quick_targets_through_reproduce_write_every_target(tmp_path):
    from eval import reproduce

    reproduce.main(["--targets", "--quick", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "targets.csv")))
    assert {r["workload"] for r in rows if r["target"] == "minimum over loads"} == {"bfcl", "coding", "multi-agent"}
    assert sum(r["target"] == "KVFlow setting" for r in rows) == 3  # single (2 host sizes) and many workflows
    for r in rows:
        assert float(r["ratio"]) == pytest.approx(float(r["hicache_jct_s"]) / float(r["ours_jct_s"]))
