"""Replay agent programs against a running SGLang server (ours or upstream) over HTTP.

Each program starts at its arrival time (scaled by --time-scale); each turn sends its prompt as
token ids with output length forced (`ignore_eos`, `max_new_tokens`), streams the reply to
time the first token, then sleeps the recorded tool duration. The next prompt is the previous
prompt + the server's output ids + the trace's appended tokens. With --hints (our server only)
every request carries its session, and each tool call is announced with POST /agent/tool_start,
whose answer (the chosen TTL) is recorded.

    python -m eval.replay --url http://127.0.0.1:30000 --trace bfcl --limit 20 --rate 1 --hints
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import aiohttp

from eval.traces.format import Program, Turn, load_programs, with_poisson_arrivals


@dataclass
class ReplayTurn:
    program_id: str
    turn: int
    arrival_s: float
    ttft_s: float
    latency_s: float
    prompt_tokens: int
    cached_tokens: int
    ttl_s: Optional[float] = None
    pinned_tokens: Optional[int] = None
    expected_benefit_s: Optional[float] = None  # the TTL policy's price of keeping the KV


@dataclass
class ReplayResult:
    programs: dict[str, float] = field(default_factory=dict)  # program -> JCT (s)
    turns: list[ReplayTurn] = field(default_factory=list)


async def _generate(http: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, dict]:
    """Stream one /generate; returns (time to first chunk, final JSON)."""
    started = time.perf_counter()
    first = None
    final = None
    async with http.post(url + "/generate", json={**body, "stream": True}) as response:
        if response.status != 200:
            raise RuntimeError(f"/generate answered {response.status}: {await response.text()}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            first = first if first is not None else time.perf_counter() - started
            final = json.loads(line[5:])
    if not final or "meta_info" not in final:
        raise RuntimeError(f"/generate failed inside its stream: {final}")
    return first or 0.0, final


async def replay_program(http, url: str, program: Program, start: float, time_scale: float, hints: bool,
                         result: ReplayResult) -> None:
    await asyncio.sleep(max(0.0, start + program.arrival_s * time_scale - time.perf_counter()))
    arrived = time.perf_counter()
    context = list(program.system_tokens)
    for index, turn in enumerate(program.turns):
        prompt = context + turn.append_tokens
        body = {"input_ids": prompt, "sampling_params": {
            "max_new_tokens": max(1, len(turn.output_tokens)), "ignore_eos": True, "temperature": 0}}
        if hints:
            body["agent"] = {"session_id": program.program_id}
        turn_start = time.perf_counter()
        ttft, final = await _generate(http, url, body)
        meta = final["meta_info"]
        record = ReplayTurn(program.program_id, index, turn_start - start, ttft, time.perf_counter() - turn_start,
                            meta["prompt_tokens"], meta.get("cached_tokens", 0))
        result.turns.append(record)
        context = prompt + list(final.get("output_ids") or [])
        if turn.tool_name is None:
            break
        if hints:
            async with http.post(url + "/agent/tool_start", json={
                "session_id": program.program_id, "tool_name": turn.tool_name,
                "expected_duration_s": turn.tool_duration_s * time_scale}) as answer:
                decision = await answer.json()
                record.ttl_s, record.pinned_tokens = decision.get("ttl_s"), decision.get("pinned_tokens")
                record.expected_benefit_s = decision.get("expected_benefit_s")
        await asyncio.sleep(turn.tool_duration_s * time_scale)
    result.programs[program.program_id] = time.perf_counter() - arrived
    if hints:
        async with http.post(url + "/agent/session/close", json={"session_id": program.program_id}):
            pass


async def replay(url: str, programs: list[Program], time_scale: float = 1.0, hints: bool = False,
                 timeout_s: float = 600.0) -> ReplayResult:
    result = ReplayResult()
    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        await asyncio.gather(*(replay_program(http, url, p, start, time_scale, hints, result) for p in programs))
    result.turns.sort(key=lambda t: (t.program_id, t.turn))
    return result


def fold_token_ids(program: Program, max_token_id: int) -> Program:
    """Token ids modulo `max_token_id` (same id -> same id, so shared prefixes stay shared)."""
    fold = lambda ids: [t % max_token_id for t in ids]  # noqa: E731
    turns = [Turn(fold(t.append_tokens), fold(t.output_tokens), t.tool_name, t.tool_duration_s, t.agent_id)
             for t in program.turns]
    prefixes = {a: fold(t) for a, t in program.agent_prefixes.items()} if program.agent_prefixes else None
    return replace(program, system_tokens=fold(program.system_tokens), turns=turns, agent_prefixes=prefixes)


def _load(trace: str, limit: int, seed: int) -> list[Program]:
    if trace == "bfcl":
        from eval.traces.bfcl import load_bfcl

        return load_bfcl("base", limit=limit, seed=seed)
    if trace == "coding":
        from eval.traces.synthetic import coding_agent_programs

        return coding_agent_programs(limit, seed=seed)
    return load_programs(trace)[:limit]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--trace", default="bfcl", help="bfcl, coding, or a JSONL trace file (eval/traces/format.py)")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1.0, help="program arrivals per second (Poisson)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply arrival gaps and tool durations")
    parser.add_argument("--hints", action="store_true", help="send agent hints (sglang-agent server only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-token-id", type=int, help="fold token ids below this (small test vocabularies)")
    parser.add_argument("--out", type=Path, help="write per-turn records here (JSON)")
    args = parser.parse_args(argv)
    programs = _load(args.trace, args.limit, args.seed)
    if args.max_token_id:
        programs = [fold_token_ids(p, args.max_token_id) for p in programs]
    programs = with_poisson_arrivals(programs, args.rate, args.seed)
    result = asyncio.run(replay(args.url, programs, args.time_scale, args.hints))
    jcts = list(result.programs.values())
    print(f"programs {len(jcts)}  avg JCT {statistics.mean(jcts):.2f} s  "
          f"avg TTFT {statistics.mean(t.ttft_s for t in result.turns):.3f} s  "
          f"cached/prompt {sum(t.cached_tokens for t in result.turns) / sum(t.prompt_tokens for t in result.turns):.2f}")
    if args.out:
        args.out.write_text(json.dumps({"programs": result.programs, "turns": [asdict(t) for t in result.turns]}, indent=1))


if __name__ == "__main__":
    main()
