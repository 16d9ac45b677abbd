"""The figure pipeline end to end on small workloads: every figure and its CSV is written, and
the numbers in the CSV are the simulator's, not placeholders."""

import csv

import pytest

from eval import reproduce


def test_quick_reproduce_writes_figures_and_data(tmp_path):
    reproduce.main(["--all", "--quick", "--out", str(tmp_path)])
    for name in ("jct_avg_vs_load.png", "jct_p90_vs_load.png", "throughput_vs_load.png", "hit_rate_vs_load.png",
                 "ttl_sensitivity.png", "sweep.csv", "ttl_sensitivity.csv", "workflow.png", "workflow.csv",
                 "workflows.png", "workflows.csv", "hints.png", "hints.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    hinted = list(csv.DictReader(open(tmp_path / "hints.csv")))
    assert {(r["policy"], r["clients"]) for r in hinted} == {(p, c) for p in reproduce.HINTED
                                                             for c in ("zero-hint", "hinted")}
    assert all(float(r["avg_jct_s"]) > 0 for r in hinted)
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert {r["policy"] for r in rows} == set(reproduce.POLICIES)
    by = {(r["workload"], r["rate_per_s"], r["policy"]): float(r["avg_jct_s"]) for r in rows}
    # Re-prefilling every turn (vllm) can never beat reusing the prefix (sglang-lru).
    for workload, rate, policy in by:
        if policy == "vllm":
            assert by[(workload, rate, "vllm")] >= by[(workload, rate, "sglang-lru")]

    # --rerun-policies simulates only those policies again and keeps every other row as it was.
    marked = [dict(r, avg_jct_s="12345.5") if r["policy"] == "vllm" else r for r in rows]
    reproduce.write_csv(tmp_path / "sweep.csv", marked)
    reproduce.main(["--figure", "jct", "--quick", "--rerun-policies", "ours", "--out", str(tmp_path)])
    again = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [(r["workload"], r["rate_per_s"], r["policy"]) for r in again] == [(r["workload"], r["rate_per_s"], r["policy"]) for r in rows]
    assert all(r["avg_jct_s"] == "12345.5" for r in again if r["policy"] == "vllm")
    assert all(float(r["avg_jct_s"]) == by[(r["workload"], r["rate_per_s"], "ours")] for r in again if r["policy"] == "ours")
    reproduce.write_csv(tmp_path / "sweep.csv", [r for r in rows if r["policy"] != "sglang-lru"])
    with pytest.raises(SystemExit, match="no row"):
        reproduce.main(["--figure", "jct", "--quick", "--rerun-policies", "ours", "--out", str(tmp_path)])


def test_quick_workflows_figure_writes_every_policy_and_column(tmp_path):
    reproduce.main(["--figure", "workflows", "--quick", "--out", str(tmp_path)])
    assert (tmp_path / "workflows.png").stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "workflows.csv")))
    cases = {(w, str(r)) for w, (rates, _) in reproduce.dag_workloads(quick=True).items() for r in rates}
    assert {(r["workload"], r["rate_per_s"], r["policy"]) for r in rows} == {
        (w, rate, p) for w, rate in cases for p in reproduce.DAG_POLICIES}
    assert len(rows) == len(cases) * len(reproduce.DAG_POLICIES)
    for r in rows:
        jct, chain = float(r["avg_jct_s"]), float(r["critical_path_jct_s"])
        assert float(r["p90_jct_s"]) > 0 and 0.0 <= float(r["role_prefix_hit_rate"]) <= 1.0
        # The critical path's agents run one after another inside the workflow: never longer.
        assert 0 < chain <= jct + 1e-9
        # Not on the GPU = reloaded + recomputed.
        assert int(r["gpu_miss_tokens"]) >= int(r["recomputed_tokens"]) > 0
        # KV the running requests hold, a fraction of the pool over time.
        assert 0.0 < float(r["effective_memory_utilisation"]) <= 1.0
