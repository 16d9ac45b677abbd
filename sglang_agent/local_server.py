"""A real SGLang server process on 127.0.0.1, started and stopped from Python: what the demo,
the server benchmarks and the end-to-end tests run (stock `sglang.launch_server` or ours).

On a machine without a GPU, `CPU_SERVER_ARGS` with the tiny model (tiny_model.py) and dummy
weights is the configuration that works on SGLang 0.5.23."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import requests

CPU_SERVER_ARGS = [
    "--device", "cpu", "--load-format", "dummy", "--attention-backend", "torch_native",
    "--skip-server-warmup", "--dtype", "bfloat16",
    # An idle scheduler polls its sockets instead of spinning a core (and still steps once a second).
    "--sleep-on-idle",
]
STOCK_SERVER = "sglang.launch_server"
AGENT_SERVER = "sglang_agent.launch_server"


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy; the message ends with its log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(log, log_path: Path, n: int) -> str:
    """The last `n` lines of a process's log (flushed first)."""
    log.flush()
    return "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-n:])


def stop_process_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process's group, SIGKILL after `grace_s`; children that outlived the leader (a
    scheduler mid-step) go with the group. Idempotent."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class LocalServer:
    """One server process in its own process group (so stop() takes its children with it)."""

    def __init__(self, model_path: Path, extra_args: list[str], log_path: Path,
                 module: str = AGENT_SERVER, port: Optional[int] = None, env: Optional[dict] = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.module = module
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        cmd = [sys.executable, "-m", module, "--model-path", str(model_path), "--host", "127.0.0.1",
               "--port", str(self.port), *extra_args]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def healthy(self) -> bool:
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.module} on port {self.port} exited with {self.proc.returncode}; "
                                       f"log {self.log_path}:\n{self.tail()}")
            if self.healthy():
                return
            time.sleep(1)
        raise ServerStartError(f"{self.module} on port {self.port} not healthy after {timeout_s:.0f} s; "
                               f"log {self.log_path}:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        return log_tail(self.log, self.log_path, n)

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL after 30 s. Idempotent."""
        stop_process_group(self.proc, grace_s=30)
        if not self.log.closed:
            self.log.close()
