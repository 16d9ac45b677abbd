"""The agent radix cache: SGLang's tree cache with agent sessions, TTL pins and workflow-aware
eviction order."""

RADIX_CACHE_BACKEND = "agent"


def register_backend() -> None:
    """Make `--radix-cache-backend agent` select AgentRadixCache (SGLang's own registry)."""
    from sglang.srt.mem_cache.registry import get_radix_cache_factory, register_radix_cache_backend

    from sglang_agent.cache.agent_radix_cache import agent_radix_cache_factory

    if get_radix_cache_factory(RADIX_CACHE_BACKEND) is None:
        register_radix_cache_backend(RADIX_CACHE_BACKEND, agent_radix_cache_factory)
