"""Where the hooks find this process's agent backend: on the scheduler's tree cache (set by the
composition root, sglang_agent/backend.py). None when the server runs another cache."""

from __future__ import annotations


def of_scheduler(scheduler):
    return getattr(getattr(scheduler, "tree_cache", None), "agent_backend", None)


# The one scheduler of this process (set when its dispatcher is built), for hooks on components
# that have no reference back to it (the request receiver).
PROCESS = {"backend": None}
