"""The agent radix cache: SGLang's tree cache with agent sessions, TTL pins and workflow-aware
eviction order (the mechanism; sglang_agent/backend.py builds and wires it)."""
