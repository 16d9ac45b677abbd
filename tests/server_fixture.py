"""Start a real SGLang server (through sglang_agent.launch_server) on 127.0.0.1 on the CPU,
with a tiny Llama config and dummy weights."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tiny_model import write_tiny_llama

CPU_SERVER_ARGS = [
    "--device", "cpu", "--load-format", "dummy", "--attention-backend", "torch_native",
    "--host", "127.0.0.1", "--skip-server-warmup", "--dtype", "bfloat16",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, tmp: Path, extra_args: list[str], module: str = "sglang_agent.launch_server",
                 startup_timeout_s: float = 240.0, env: dict | None = None):
        model = write_tiny_llama(tmp / "tiny-llama")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{self.port}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        cmd = [sys.executable, "-m", module, "--model-path", str(model), "--port", str(self.port),
               *CPU_SERVER_ARGS, *extra_args]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"server not healthy after {startup_timeout_s} s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
