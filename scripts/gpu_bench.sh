#!/usr/bin/env bash
# The GPU kit in one go (see eval/gpu_kit/__init__.py): needs python3 with torch and triton only.
#   bash scripts/gpu_bench.sh            # on a GPU: results under eval/results/gpu/, measured profile
#                                        # under eval/sim/profiles/
#   bash scripts/gpu_bench.sh --dry      # CPU, tiny shapes (what CI runs so the kit cannot rot)
#   bash scripts/gpu_bench.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
exec "$PY" -m eval.gpu_kit "$@"
