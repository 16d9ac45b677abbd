"""The GPU kit runs end to end on the CPU (--dry: tiny shapes, Triton interpreter), so it cannot rot
between GPU runs; its checks can fail; its profile loads into the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit")
    proc = subprocess.run([sys.executable, "-m", "eval.gpu_kit", "--dry", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    return out, proc


def test_every_part_runs_and_writes_its_results(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = json.loads((out / "env.json").read_text())
    assert [p["part"] for p in env["parts"]] == ["kernel_check", "transfer", "link", "model_costs"]
    assert all(p["ok"] for p in env["parts"])
    checks = json.loads((out / "kernel_check.json").read_text())
    assert checks["failed"] == 0 and checks["passed"] == len(checks["checks"]) >= 10
    costs = json.loads((out / "model_costs.json").read_text())
    assert len([r for r in costs["prefill"] if "seconds" in r]) == 4
    assert len([r for r in costs["decode"] if "seconds" in r]) == 4
    assert costs["fitted"]["prefill_mfu"] > 0 and costs["fitted"]["decode_bw_efficiency"] > 0
    assert (out / "kv_transfer_cpu.csv").read_text().count("\n") == 5  # header + 2 sizes x 2 directions
    link = json.loads((out / "link.json").read_text())
    assert set(link["cases"]) == {"copy_engine", "triton_kernel"}
    assert all(v > 0 for case in link["cases"].values() for v in case.values())
    assert "all parts ok" in proc.stdout


def test_the_profile_it_writes_loads_into_the_simulator(dry_run):
    from eval.sim.cost_model import load_profile

    out, _ = dry_run
    profile = json.loads((out / "profile-dry.json").read_text())
    assert "DRY RUN" in profile["description"]
    model = load_profile(str(out / "profile-dry.json"))
    costs = json.loads((out / "model_costs.json").read_text())
    assert model.prefill_mfu == costs["fitted"]["prefill_mfu"]
    assert model.decode_bw_efficiency == costs["fitted"]["decode_bw_efficiency"]


def test_the_measured_h200_profile_is_a_valid_cost_model():
    """The committed GPU run (eval/results/gpu/) and the profile made from it agree."""
    from eval.sim.cost_model import load_profile

    model = load_profile("llama-3.1-8b-h200-measured")
    costs = json.loads((ROOT / "eval/results/gpu/model_costs.json").read_text())
    assert costs["device"] == "NVIDIA H200" and not costs["dry"]
    assert model.prefill_mfu == pytest.approx(costs["fitted"]["prefill_mfu"])
    assert model.decode_bw_efficiency == pytest.approx(costs["fitted"]["decode_bw_efficiency"])
    assert 0.1 < model.prefill_mfu < 1 and 0.1 < model.decode_bw_efficiency < 1
    assert 1e10 < model.host_bytes_per_s < 64e9  # under PCIe 5.0 x16's 63 GB/s
    assert model.kv_pool_tokens > 0


def test_the_round_trip_check_passes_a_correct_kernel_and_fails_a_broken_one(monkeypatch):
    import torch

    from eval.gpu_kit import kernel_check
    from sglang_agent.kernels import kv_transfer as kt

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    kernel_check.check_round_trip(torch.device("cpu"), torch.bfloat16, (64, 2, 8), 2, 16)
    monkeypatch.setattr(kt, "copy_rows", lambda *a, **k: None)
    with pytest.raises(AssertionError, match="offload"):
        kernel_check.check_round_trip(torch.device("cpu"), torch.bfloat16, (64, 2, 8), 2, 16)


def test_the_kit_imports_no_sglang():
    """A bare GPU machine has no SGLang: the kit's modules must not need it."""
    code = ("import sys, eval.gpu_kit.__main__, eval.gpu_kit.kernel_check, eval.gpu_kit.model_costs, "
            "eval.gpu_kit.transfer, eval.gpu_kit.link; print([m for m in sys.modules if m == 'sglang' or m.startswith('sglang.')])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
