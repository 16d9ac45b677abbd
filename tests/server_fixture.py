"""Start a real SGLang server (through sglang_agent.launch_server by default) on 127.0.0.1 on the
CPU, with the tiny Llama config and dummy weights (sglang_agent.local_server does the work)."""

from __future__ import annotations

from pathlib import Path

import requests

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


def fill_pool(url: str, seed: int, tokens: float, prompt_tokens: int, max_new_tokens: int) -> int:
    """Other tenants: one-off `prompt_tokens`-token prompts (no session, no tools) through the
    server at `url` until `tokens` prompt tokens went through its pool; returns how many did."""
    filled, i = 0, 0
    while filled < tokens:
        ids = [3 + (seed * 7919 + i * 104729 + j * 613) % 1000 for j in range(prompt_tokens)]
        r = requests.post(url + "/generate", json={"input_ids": ids, "sampling_params": {
            "max_new_tokens": max_new_tokens, "temperature": 0}}, timeout=300)
        assert r.status_code == 200, r.text
        filled += r.json()["meta_info"]["prompt_tokens"]
        i += 1
    return filled
