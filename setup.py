"""sglang-agent: agent-aware KV caching for SGLang (TTL pins, offload, workflow-aware eviction).

Layout: ``sglang_agent/`` is the package; ``patches/`` (every hook into SGLang internals) is
installed as ``sglang_agent.patches`` and ``triton_kernels/`` as ``sglang_agent.kernels``, so
neither shadows SGLang's own ``triton_kernels`` site-package.
"""

from setuptools import setup

SGLANG_VERSION = "0.5.23"

setup(
    name="sglang-agent",
    version="0.1.0",
    description="Agent-aware KV cache (TTL pins, offload, workflow eviction) for SGLang",
    python_requires=">=3.10",
    packages=[
        "sglang_agent",
        "sglang_agent.cache",
        "sglang_agent.controller",
        "sglang_agent.policy",
        "sglang_agent.server",
        "sglang_agent.patches",
        "sglang_agent.kernels",
    ],
    package_dir={
        "sglang_agent": "sglang_agent",
        "sglang_agent.patches": "patches",
        "sglang_agent.kernels": "triton_kernels",
    },
    entry_points={
        # SGLang loads general plugins in every server process (HTTP, scheduler, detokenizer).
        "sglang.srt.plugins": ["sglang_agent = sglang_agent.patches:load"],
        "console_scripts": ["sglang-agent-server = sglang_agent.launch_server:main"],
    },
    install_requires=[f"sglang=={SGLANG_VERSION}"],
    extras_require={"dev": ["pytest", "hypothesis", "matplotlib", "pytest-timeout"]},
)
