"""Tensor-parallel ranks agree: two processes (torch.distributed, gloo) each hold an agent backend,
as two TP ranks of one server do, and replay one sequence of requests, hints, aborts and memory
pressure whose pins expire along the way. Their clocks are skewed (rank 1 runs 0.25 s ahead) and
each reads its clock at its own moment within a step (up to 9 ms apart, as real ranks do).

- As the server runs it (rank 0's time carried to every rank with the step's inputs, the step
  clock): the ranks end with identical trees, pins, sessions and evictions.
- Control, each rank reading its own clock (what every time-dependent decision did before the step
  clock: the pin sweep, host-tier timers, is_pin_live): the trees diverge — different pins expire
  at different steps, so pressure evicts different nodes. This is the failure the step clock fixes
  (on a real server: wrong output or a hung collective)."""

from __future__ import annotations

import hashlib
import os
import random
import socket

import pytest
import torch.multiprocessing as mp

SKEW_S = (0.0, 0.25)
STEPS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replay(rank: int, port: int, mode: str, out) -> None:
    import torch.distributed as dist

    from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
    from sglang.srt.mem_cache.radix_cache import RadixKey

    from sglang_agent.backend import build_backend
    from sglang_agent.config import AgentServerArgs
    from sglang_agent.hints import HintError, InlineAgentHint, ToolStart

    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    backend = build_backend(160, AgentServerArgs(max_ttl_s=60.0, session_idle_s=2.0))
    cache, ctl = backend.cache, backend.controller
    rng = random.Random(7)  # the same inputs on both ranks, as SGLang broadcasts them
    reads = random.Random(100 + rank)  # when in its step each rank reads its own clock: its own
    allocator = cache.token_to_kv_pool_allocator
    running: dict[str, tuple[str, list]] = {}
    history = hashlib.sha256()

    def insert(key):
        short = len(key) - allocator.available_size()
        if short > 0:
            cache.evict(EvictParams(num_tokens=short))
        if allocator.available_size() < len(key):
            return None
        return cache.insert(InsertParams(key=RadixKey(key), value=allocator.alloc(len(key))))

    class Req:
        def __init__(self, rid, node, key):
            self.rid, self.last_node, self.origin_input_ids, self.cached_tokens = rid, node, key, 0
            self.finished_reason = None

    for step in range(STEPS):
        own_time = step * 0.01 + SKEW_S[rank] + reads.uniform(0.0, 0.009)
        if mode == "broadcast":
            carried = [own_time if rank == 0 else None]
            dist.broadcast_object_list(carried, src=0)
            backend.tick(carried[0])
        else:
            backend.tick(own_time)
        session = f"s{rng.randrange(8)}"
        op = rng.random()
        try:
            if op < 0.35 and session not in running:
                rid = f"r{step}"
                ctl.bind(rid, InlineAgentHint(session, ToolStart(session, "t", rng.choice([0.04, 0.08, 0.3]))
                                              if rng.random() < 0.7 else None))
                ctl.request_entered(rid)
                running[session] = (rid, [rng.randrange(4)] + [rng.randrange(50) for _ in range(rng.randrange(10, 40))])
            elif op < 0.65 and session in running:
                rid, key = running.pop(session)
                result = insert(key)
                if result is None or rng.random() < 0.15:
                    ctl.request_dropped(rid)  # aborted
                else:
                    ctl.turn_finished(Req(rid, result.last_device_node, key))
            elif op < 0.75:
                ctl.tool_end(session)
            elif op < 0.85:
                ctl.tool_start(ToolStart(session, "t", rng.choice([0.04, 0.1])))
            else:  # another tenant's prompt: memory pressure
                insert([100 + rng.randrange(100) for _ in range(rng.randrange(30, 80))])
                cache.match_prefix(MatchPrefixParams(key=RadixKey([rng.randrange(4)])))
        except HintError:
            pass  # a refused hint changes nothing, on every rank alike
        backend.check_integrity()
        # What every step left (so every eviction), with pins by holder, not by time: ranks whose
        # clocks differ by a constant still compare equal when they decided alike.
        history.update(backend.state_digest(times=False).encode())
    tree = sorted((tuple(n.key), n.evicted) for n in cache.tree_core._node_arena.values()  # noqa: SLF001 (test)
                  if n is not cache.tree_core.root_node)
    digests = [None, None]
    dist.all_gather_object(digests, (history.hexdigest(), repr(tree), ctl.stats.pins_expired_before_tool_end,
                                     vars(ctl.stats)))
    if rank == 0:
        out.put(digests)
    dist.destroy_process_group()


def _run(mode: str):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_replay, args=(rank, port, mode, out)) for rank in range(2)]
    for p in procs:
        p.start()
    digests = out.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return digests


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")])))


def test_ranks_with_skewed_clocks_take_identical_steps_on_the_step_clock():
    """Every step's tree, pins and sessions (so every eviction) are the same on both ranks."""
    (history0, tree0, lapsed0, stats0), (history1, tree1, lapsed1, stats1) = _run("broadcast")
    assert lapsed0 > 0, repr(stats0)  # pins did expire along the way
    assert history0 == history1 and tree0 == tree1 and stats0 == stats1


def test_control_ranks_on_their_own_clocks_diverge():
    (history0, _, _, stats0), (history1, _, _, stats1) = _run("local")
    assert history0 != history1, "ranks reading their own clocks should have taken different steps"
