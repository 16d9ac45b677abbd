"""The GPU kit: everything sglang-agent measures on a GPU, in one run, on a bare machine (PyTorch,
Triton, no network, no SGLang CUDA wheels, nothing installed from this repo).

    bash scripts/gpu_bench.sh                 # on a GPU machine: writes eval/results/gpu/ and a
                                              # measured cost profile under eval/sim/profiles/
    bash scripts/gpu_bench.sh --dry           # anywhere (CI): CPU, tiny shapes, Triton interpreter

Parts (each in its own process, so one that crashes leaves the others' results):
  kernel_check   the Triton copy kernel against the torch reference on the GPU, bit for bit;
  transfer       eval.bench_kv_transfer: ours vs torch vs the pinned-copy peak, both directions;
  link           both directions at once, two transfers one way: how the host link is shared;
  model_costs    prefill and decode times of Llama-3.1-8B's shape, random weights, fitted into a
                 cost profile for the simulator.

Importing this package makes `sglang_agent.kernels` importable from a plain checkout (setup.py
installs `triton_kernels/` under that name; on a bare GPU machine nothing is installed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _kernels_importable() -> None:
    try:
        import sglang_agent.kernels  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    import sglang_agent

    folder = ROOT / "triton_kernels"
    spec = importlib.util.spec_from_file_location("sglang_agent.kernels", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["sglang_agent.kernels"] = module
    spec.loader.exec_module(module)
    sglang_agent.kernels = module


_kernels_importable()


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
