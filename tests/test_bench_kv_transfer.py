"""eval/bench_kv_transfer.py runs end to end on the CPU (torch reference timed, Triton through the
interpreter), checks the bytes its kernels moved, and writes its CSV and plot."""

import csv

import pytest

from eval import bench_kv_transfer


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    # Set here so that it is unset again after the test (--interpret sets it in-process).
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_cpu_run_reports_both_directions_for_every_size(tmp_path, capsys):
    out = tmp_path / "kvt"
    rows = bench_kv_transfer.main(["--tokens", "32,128", "--layers", "2", "--kv-heads", "2", "--head-dim", "16",
                                   "--repeats", "1", "--interpret", "--out", str(out)])
    assert [(r.direction, r.tokens) for r in rows] == [("gather", 32), ("scatter", 32), ("gather", 128), ("scatter", 128)]
    assert all(r.triton_gbps > 0 and r.torch_gbps > 0 and r.peak_gbps > 0 for r in rows)
    assert rows[0].bytes == 32 * 2 * 2 * 2 * 16 * 2  # tokens x layers x K,V x heads x dim x bf16
    printed = capsys.readouterr().out
    assert "not a GPU claim" in printed
    with open(tmp_path / "kvt_cpu.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "kvt_cpu.png").stat().st_size > 0


def test_a_wrong_copy_fails_the_benchmark():
    """check_exact is not decoration: a kernel that moves the wrong rows is caught."""
    import torch

    pool = bench_kv_transfer.make_pool(16, 1, 1, 8, torch.bfloat16, torch.device("cpu"))
    slots = torch.tensor([3, 5])
    host = [torch.zeros((2, 1, 8), dtype=torch.bfloat16) for _ in pool]
    with pytest.raises(AssertionError, match="different bytes"):
        bench_kv_transfer.check_exact(pool, slots, host, True, lambda: None)
