"""Start a real SGLang server (through sglang_agent.launch_server by default) on 127.0.0.1 on the
CPU, with the tiny Llama config and dummy weights (sglang_agent.local_server does the work)."""

from __future__ import annotations

from pathlib import Path

from sglang_agent.local_server import AGENT_SERVER, CPU_SERVER_ARGS, LocalServer, free_port  # noqa: F401
from sglang_agent.tiny_model import write_tiny_llama


class RunningServer(LocalServer):
    def __init__(self, tmp: Path, extra_args: list[str], module: str = AGENT_SERVER,
                 startup_timeout_s: float = 240.0, env: dict | None = None):
        model = write_tiny_llama(tmp / "tiny-llama")
        port = free_port()
        super().__init__(model, [*CPU_SERVER_ARGS, *extra_args], tmp / f"server-{port}.log", module=module,
                         port=port, env=env)
        try:
            self.wait_healthy(startup_timeout_s)
        except Exception:
            self.stop()
            raise
