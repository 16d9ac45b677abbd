"""sglang-agent: agent-aware KV caching for SGLang.

`sglang_agent.policy` is pure decision code (injected clock, no server imports); `sglang_agent.cache`
holds the SGLang tree-cache extension; `sglang_agent.server` the hint API; every hook into
SGLang internals lives in `sglang_agent.patches` (the repo's `patches/` folder).
"""

__version__ = "0.1.0"
# The one SGLang release this package is written against; patches refuse any other.
SGLANG_VERSION = "0.5.23"
