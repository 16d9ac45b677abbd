"""Triton kernels of sglang-agent, installed as `sglang_agent.kernels` so that this folder never
shadows the `triton_kernels` site-package that SGLang installs."""
