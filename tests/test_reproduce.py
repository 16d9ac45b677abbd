"""The figure pipeline end to end on small workloads: every figure and its CSV is written, and
the numbers in the CSV are the simulator's, not placeholders."""

import csv

from eval import reproduce


def test_quick_reproduce_writes_figures_and_data(tmp_path):
    reproduce.main(["--all", "--quick", "--out", str(tmp_path)])
    for name in ("jct_avg_vs_load.png", "jct_p90_vs_load.png", "throughput_vs_load.png", "hit_rate_vs_load.png",
                 "ttl_sensitivity.png", "sweep.csv", "ttl_sensitivity.csv", "workflow.png", "workflow.csv",
                 "hints.png", "hints.csv"):
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
