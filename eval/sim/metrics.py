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
        # GPU-tier misses (Bélády's yardstick, eval/sim/belady.py): prompt tokens prefilled, and
        # those plus the ones reloaded from host.
        "recomputed_tokens": sum(t.prompt_tokens - t.cached_tokens for t in turns),
        "gpu_miss_tokens": sum(t.prompt_tokens - t.gpu_cached_tokens for t in turns),
    }


def summarize_dag(result: SimResult) -> dict:
    """summarize() plus what DAG workflow runs are judged by:
    - critical_path_jct_s: per program, the sum over its critical-path agents of (the agent's last
      finish - when it became ready, i.e. its first turn's arrival), averaged over programs;
    - role_prefix_hit_rate: over every agent's first turn, except those of the first program
      that used the role (nothing could have cached it), the role prompt's tokens found in the GPU
      tree / the role prompt's tokens (token-weighted; a reload from host is no hit here);
    - recomputed_tokens (summarize): prompt tokens neither on the GPU nor reloaded from host;
    - gpu_miss_tokens (summarize): prompt tokens not found in the GPU tree (reloaded + recomputed);
    - effective_memory_utilisation: KV held by running requests / the pool, averaged over the run
      (first arrival to last finish; eval/sim/memory_use.py)."""
    turns = [t for p in result.programs for t in p.turns]
    chains = [_critical_path_s(p) for p in result.programs if p.critical_path]
    span = result.makespan_s - min((p.arrival_s for p in result.programs), default=0.0)
    firsts = sorted((t for t in turns if t.role is not None), key=lambda t: t.arrival_s)
    first_user: dict[str, str] = {}
    for t in firsts:
        first_user.setdefault(t.role, t.program_id)
    counted = [t for t in firsts if first_user[t.role] != t.program_id]
    role_tokens = sum(t.role_prefix_tokens for t in counted)
    return {
        **summarize(result),
        "critical_path_jct_s": statistics.mean(chains) if chains else float("nan"),
        "role_prefix_hit_rate": (sum(min(t.gpu_cached_tokens, t.role_prefix_tokens) for t in counted) / role_tokens
                                 if role_tokens else float("nan")),
        "effective_memory_utilisation": result.running_kv_token_s / max(1e-9, result.pool_tokens * span),
        # Memory the critical-path reservation held back from others while they waited and no
        # critical request took it (TokenCake's idle reservation; 0 without a reservation).
        "reserved_idle_token_s": result.reserved_idle_token_s,
    }


def _critical_path_s(program) -> float:
    ready: dict[str, float] = {}
    done: dict[str, float] = {}
    for t in program.turns:
        ready[t.agent_id] = min(ready.get(t.agent_id, t.arrival_s), t.arrival_s)
        done[t.agent_id] = max(done.get(t.agent_id, t.finish_s), t.finish_s)
    return sum(done[a] - ready[a] for a in program.critical_path)
