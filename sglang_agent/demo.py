"""The project's point in one command: stock SGLang beside sglang-agent on the same agent workload.

    python -m sglang_agent.demo                 # CPU, tiny model with dummy weights, ~2 min
    python -m sglang_agent.demo --short         # fewer sessions and turns (what the tests run)
    python -m sglang_agent.demo --model-path meta-llama/Llama-3.1-8B-Instruct --device cuda

It starts two real servers on 127.0.0.1 with the same KV pool: `sglang.launch_server` (upstream)
and `sglang_agent.launch_server` (ours). Then the same workload runs against each, through the
OpenAI Python SDK: several agent sessions at once, each turn ending in a tool call (a sleep),
while other tenants send long one-off prompts that fill the KV pool meanwhile. Upstream's LRU
evicts an idle session's prefix during its tool call and re-prefills it on the resumed turn;
ours pins it for a TTL (the `agent` hint on each request) and finds it cached.

The table compares resumed turns (turns that follow a tool call): how many found their previous
prompt cached, the cached share of their prompts, pins and offloads (our /agent/stats), and their
time to first token. Every server started here is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import requests

from sglang_agent.local_server import AGENT_SERVER, CPU_SERVER_ARGS, STOCK_SERVER, LocalServer, ServerStartError

WORDS = ("the agent calls a tool and waits for the result before the next turn ls cat README def main "
         "print hello world user book flight assistant search flights tool price stops").split()
PASSES = ("upstream", "ours")


@dataclass(frozen=True)
class DemoConfig:
    sessions: int = 4
    turns: int = 4  # LLM calls per session; all but the last end in a tool call
    tool_s: float = 2.0  # how long each tool call sleeps
    system_words: int = 260  # each session's own system prompt (plus the shared one)
    turn_words: int = 30  # user / tool-result text appended per turn
    output_tokens: int = 8
    tenant_words: int = 700  # one other tenant's one-off prompt
    tenant_concurrency: int = 2
    pool_tokens: int = 6144
    seed: int = 0

    @classmethod
    def short(cls) -> "DemoConfig":
        return cls(sessions=3, turns=3, tool_s=1.5)


@dataclass
class TurnRecord:
    session: str
    turn: int
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    previous_prompt_tokens: Optional[int] = None  # None: the first turn of its session

    @property
    def resumed(self) -> bool:
        return self.previous_prompt_tokens is not None

    @property
    def hit(self) -> bool:
        # The previous prompt was cached (all but the token where the new turn's text joins it).
        return self.resumed and self.cached_tokens >= self.previous_prompt_tokens - 1


@dataclass
class PassResult:
    name: str
    turns: list[TurnRecord] = field(default_factory=list)
    tenant_requests: int = 0
    agent_stats: Optional[dict] = None  # /agent/stats difference over the pass (ours only)

    def resumed(self) -> list[TurnRecord]:
        return [t for t in self.turns if t.resumed]


def _text(rnd: random.Random, words: int) -> str:
    return " ".join(f"{rnd.choice(WORDS)}{rnd.randint(0, 99)}" for _ in range(words))


async def _chat(client, model: str, messages: list[dict], max_tokens: int, extra_body: dict) -> tuple[str, dict, float]:
    """One streamed chat completion: (text, usage, time to first token)."""
    started = time.perf_counter()
    ttft = None
    parts, usage = [], None
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True, **extra_body})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - started
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    if usage is None:
        raise RuntimeError("the server sent no usage: is --enable-cache-report set?")
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return "".join(parts), {"prompt_tokens": usage.prompt_tokens, "cached_tokens": cached or 0}, (
        ttft if ttft is not None else time.perf_counter() - started)


async def _session(client, model, cfg: DemoConfig, name: str, session_id: Optional[str], shared: str,
                   result: PassResult, progress) -> None:
    rnd = random.Random(f"{cfg.seed}/{name}")
    messages = [{"role": "system", "content": shared + " " + _text(rnd, cfg.system_words)},
                {"role": "user", "content": _text(rnd, cfg.turn_words)}]
    previous = None
    for turn in range(cfg.turns):
        ends_in_tool = turn < cfg.turns - 1
        extra = {}
        if session_id is not None:
            agent = {"session_id": session_id}
            if ends_in_tool:
                agent["tool_start"] = {"tool_name": "bash"}
            extra["agent"] = agent
        text, usage, ttft = await _chat(client, model, messages, cfg.output_tokens, extra)
        result.turns.append(TurnRecord(name, turn, usage["prompt_tokens"], usage["cached_tokens"], ttft, previous))
        progress()
        previous = usage["prompt_tokens"]
        if ends_in_tool:
            await asyncio.sleep(cfg.tool_s)  # the tool runs; other tenants fill the pool meanwhile
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": "tool returned: " + _text(rnd, cfg.turn_words)}]


async def _tenants(client, model, cfg: DemoConfig, stop: asyncio.Event, result: PassResult, rnd: random.Random) -> None:
    """Other tenants: one-off long prompts, `tenant_concurrency` at a time, until `stop`."""
    async def one_tenant():
        while not stop.is_set():
            await _chat(client, model, [{"role": "user", "content": _text(rnd, cfg.tenant_words)}], 4, {})
            result.tenant_requests += 1

    await asyncio.gather(*(one_tenant() for _ in range(cfg.tenant_concurrency)))


async def run_pass(url: str, model: str, cfg: DemoConfig, name: str, hints: bool, progress) -> PassResult:
    from openai import AsyncOpenAI

    result = PassResult(name)
    client = AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    # Each pass has its own texts and session ids: nothing one pass cached helps another.
    tag = f"{cfg.seed}-{name}"
    shared = "you are a coding agent " + _text(random.Random(tag), 40)
    stop = asyncio.Event()
    tenants = asyncio.create_task(_tenants(client, model, cfg, stop, result, random.Random(f"{tag}/tenants")))
    try:
        await asyncio.gather(*(
            _session(client, model, cfg, f"{tag}-s{i}", f"demo-{tag}-s{i}" if hints else None, shared, result, progress)
            for i in range(cfg.sessions)))
    finally:
        stop.set()
        await tenants
        await client.close()
    return result


def agent_stats(url: str) -> dict:
    response = requests.get(url + "/agent/stats", timeout=30)
    response.raise_for_status()
    return response.json()


def stats_delta(before: dict, after: dict) -> dict:
    keys = ("tool_calls", "pins_created", "pins_refused", "pins_expired_before_tool_end", "offloads", "resumed_turns",
            "resumed_turns_with_hit", "resumed_cached_tokens", "resumed_prompt_tokens")
    return {k: (after.get(k) or 0) - (before.get(k) or 0) for k in keys}


# ---- the table ---------------------------------------------------------------------------------
def summary(result: PassResult) -> dict:
    resumed = result.resumed()
    prompt = sum(t.prompt_tokens for t in resumed)
    cached = sum(t.cached_tokens for t in resumed)
    ttfts = sorted(t.ttft_s for t in resumed)
    stats = result.agent_stats or {}
    return {
        "resumed turns": len(resumed),
        "resumed turns with a cache hit": sum(t.hit for t in resumed),
        "cached tokens of resumed turns": cached,
        "cached share of resumed prompts": cached / prompt if prompt else 0.0,
        "pins": stats.get("pins_created", 0),
        "pins that lapsed before the tool returned": stats.get("pins_expired_before_tool_end", 0),
        "offloads": stats.get("offloads", 0),
        "TTFT of resumed turns, mean (s)": statistics.mean(ttfts) if ttfts else 0.0,
        "TTFT of resumed turns, p90 (s)": ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))] if ttfts else 0.0,
        "other tenants' requests": result.tenant_requests,
    }


def format_table(results: list[PassResult]) -> str:
    rows = [summary(r) for r in results]
    width = max(len(k) for k in rows[0])
    col = max(14, *(len(r.name) + 2 for r in results))
    lines = [" " * width + "".join(r.name.rjust(col) for r in results)]
    for key in rows[0]:
        cells = []
        for row in rows:
            value = row[key]
            cells.append((f"{value:.3f}" if isinstance(value, float) else str(value)).rjust(col))
        lines.append(key.ljust(width) + "".join(cells))
    return "\n".join(lines)


# ---- servers -----------------------------------------------------------------------------------
def server_args(cfg: DemoConfig, device: str) -> list[str]:
    base = list(CPU_SERVER_ARGS) if device == "cpu" else ["--device", device]
    return [*base, "--max-total-tokens", str(cfg.pool_tokens), "--enable-cache-report"]


def start_servers(model_path: Path, cfg: DemoConfig, device: str, port: Optional[int], workdir: Path,
                  servers: list[LocalServer], start_timeout_s: float = 600.0) -> dict[str, LocalServer]:
    """Start both at once (they boot in parallel), then wait for each; a failure raises
    ServerStartError naming the server and its log tail. `servers` collects them as they start,
    so the caller stops whatever came up."""
    started = {}
    for i, (name, module) in enumerate((("upstream", STOCK_SERVER), ("ours", AGENT_SERVER))):
        server = LocalServer(model_path, server_args(cfg, device), workdir / f"{name}.log", module=module,
                             port=None if port is None else port + i)
        servers.append(server)
        started[name] = server
        print(f"[demo] starting {name} ({module}) on {server.url}, pid {server.pid}, log {server.log_path}", flush=True)
    for name, server in started.items():
        server.wait_healthy(start_timeout_s)
        print(f"[demo] {name} is up", flush=True)
    return started


def served_model(url: str) -> str:
    return requests.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]


def run(cfg: DemoConfig, model_path: Optional[str], device: str, port: Optional[int], passes: tuple[str, ...],
        json_out: Optional[Path]) -> list[PassResult]:
    from tqdm import tqdm

    servers: list[LocalServer] = []
    with tempfile.TemporaryDirectory(prefix="sglang-agent-demo-") as tmp:
        workdir = Path(tmp)
        try:
            if model_path is None:
                from sglang_agent.tiny_model import write_tiny_llama

                model = write_tiny_llama(workdir / "tiny-llama")
                print(f"[demo] tiny Llama (2 layers, dummy weights) written to {model}", flush=True)
            else:
                model = Path(model_path) if Path(model_path).exists() else model_path
            up = start_servers(model, cfg, device, port, workdir, servers)
            results = []
            for name in passes:
                server = up["upstream" if name == "upstream" else "ours"]
                hints = name == "ours"
                before = agent_stats(server.url) if server is up["ours"] else None
                with tqdm(total=cfg.sessions * cfg.turns, desc=f"[demo] {name}", unit="turn", file=sys.stdout,
                          dynamic_ncols=True) as bar:
                    result = asyncio.run(run_pass(server.url, served_model(server.url), cfg, name, hints,
                                                  lambda: bar.update(1)))
                if before is not None:
                    result.agent_stats = stats_delta(before, agent_stats(server.url))
                results.append(result)
            print()
            print(format_table(results))
            if json_out is not None:
                json_out.write_text(json.dumps([{"name": r.name, "summary": summary(r), "agent_stats": r.agent_stats,
                                                 "turns": [vars(t) for t in r.turns]} for r in results], indent=1))
            return results
        except ServerStartError as e:
            print(f"[demo] a server did not come up: {e}", file=sys.stderr, flush=True)
            raise
        finally:
            for server in servers:
                server.stop()
            if servers:
                print(f"[demo] stopped {len(servers)} server(s): pids {[s.pid for s in servers]}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sglang_agent.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    d = DemoConfig()
    p.add_argument("--model-path", default=None, help="model for both servers (default: a tiny Llama with dummy "
                   "weights, built in a temp folder)")
    p.add_argument("--device", default="cpu", help="cpu (default; CPU-safe server options) or cuda")
    p.add_argument("--sessions", type=int, default=None, help=f"concurrent agent sessions (default {d.sessions})")
    p.add_argument("--turns", type=int, default=None, help=f"LLM calls per session (default {d.turns})")
    p.add_argument("--tool-s", type=float, default=None, help=f"seconds each tool call sleeps (default {d.tool_s})")
    p.add_argument("--pool-tokens", type=int, default=d.pool_tokens, help="KV pool of both servers "
                   "(--max-total-tokens; default %(default)s)")
    p.add_argument("--port", type=int, default=None, help="upstream listens on PORT, ours on PORT+1 (default: free ports)")
    p.add_argument("--short", action="store_true", help="3 sessions x 3 turns, 1.5 s tools (what the tests run)")
    p.add_argument("--passes", default=",".join(PASSES), help="comma-separated, of: " + ", ".join(PASSES))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", type=Path, default=None, help="also write every turn and the table here")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    cfg = DemoConfig.short() if args.short else DemoConfig()
    overrides = {k: v for k, v in (("sessions", args.sessions), ("turns", args.turns), ("tool_s", args.tool_s)) if v is not None}
    cfg = DemoConfig(**{**vars(cfg), **overrides, "pool_tokens": args.pool_tokens, "seed": args.seed})
    if cfg.sessions < 1 or cfg.turns < 2 or cfg.tool_s < 0 or cfg.pool_tokens < 1024:
        p.error("need --sessions >= 1, --turns >= 2, --tool-s >= 0, --pool-tokens >= 1024")
    passes = tuple(x.strip() for x in args.passes.split(",") if x.strip())
    if not passes or set(passes) - set(PASSES):
        p.error(f"--passes: choose from {', '.join(PASSES)}")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)  # SIGINT already raises KeyboardInterrupt
    try:
        run(cfg, args.model_path, args.device, args.port, passes, args.json)
    except KeyboardInterrupt:
        print("[demo] interrupted", file=sys.stderr)
        return 130
    except ServerStartError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
