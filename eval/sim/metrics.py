"""Summaries of a simulation run: job completion time (JCT), throughput, cache hits after tool
calls, queueing."""

from __future__ import annotations

import statistics

from eval.sim.engine import SimResult


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize(result: SimResult) -> dict:
    jcts = [p.jct_s for p in result.programs]
    turns = [t for p in result.programs for t in p.turns]
    resumed = [t for t in turns if t.turn > 0]
    tokens = sum(t.prompt_tokens for t in turns)
    first_arrival = min((p.arrival_s for p in result.programs), default=0.0)
    span = max(result.makespan_s - first_arrival, 1e-9)
    return {
        "policy": result.policy,
        "programs": len(result.programs),
        "avg_jct_s": statistics.mean(jcts),
        "p90_jct_s": percentile(jcts, 0.9),
        "throughput_programs_per_s": len(result.programs) / span,
        "prompt_tokens_per_s": tokens / span,
        # All the KV the previous turn left (prompt + output) was still cached, on GPU or (with
        # offload) on host, when the turn came back.
        "hit_rate_after_tool": sum(t.cached_tokens >= t.previous_context_tokens for t in resumed) / max(1, len(resumed)),
        "token_hit_rate": sum(t.cached_tokens for t in turns) / max(1, tokens),
        "avg_queue_s": statistics.mean(t.admitted_s - t.arrival_s for t in turns),
        "avg_ttft_s": statistics.mean(t.first_token_s - t.arrival_s for t in turns),
    }
