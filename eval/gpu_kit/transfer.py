"""eval.bench_kv_transfer run from the kit (importing eval.gpu_kit first makes our kernels
importable on a machine where nothing is installed)."""

import sys

import eval.gpu_kit  # noqa: F401  (the sglang_agent.kernels alias)
from eval import bench_kv_transfer

if __name__ == "__main__":
    bench_kv_transfer.main(sys.argv[1:])
