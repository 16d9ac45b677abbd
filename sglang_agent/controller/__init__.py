"""The agent controller: sessions, tool calls and workflows, over protocols it owns (ports.py)."""

from sglang_agent.controller.controller import AgentController
from sglang_agent.controller.ports import HostTier, LoadProbe, LoadSnapshot, SessionKV

__all__ = ["AgentController", "HostTier", "LoadProbe", "LoadSnapshot", "SessionKV"]
