"""N simulated SGLang workers behind a gateway that routes every turn, with the policies of SGLang's
own gateway (`smg`): round robin, consistent hashing on a routing key (the session: the client sends
its id in X-SMG-Routing-Key), and cache-aware (prefix locality, no key), each behind smg's overload
gate. Every worker is a full eval.sim.engine.Simulator (its own cache, controller and host tier,
the server's code); the programs' state is shared, since a turn may land on any worker.

Time: the cluster always advances whatever is earliest, a turn's arrival or the iteration of the
busy worker that is furthest behind, so no worker sees the future of another by more than one
iteration.

Routing, as smg 1.13.0 documents it (`smg launch --help`), with what the simulator simplifies:
- overload gate: a worker whose KV token_usage (used minus hard-pinned, as our workers report it;
  pins count as used with `pins_count_as_used`) is >= 0.8, or with >= 8 waiting requests, is left
  out while another is under; the gateway polls loads every 10 s, so routing reads a snapshot up
  to 10 s old;
- consistent_hashing: a hash ring (160 points per worker) over the routing key;
- cache_aware: the worker whose cache holds the longest prefix of the prompt when that share is
  >= 0.3 (`--cache-threshold`), unless its in-flight requests exceed the mean by 32 and 1.5x (the
  spill gate); otherwise the worker with the fewest in-flight requests. smg matches against an
  approximate tree of the text it routed; here each worker's real tree is matched (it knows
  evictions), an upper bound of what smg's routing can know.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
from array import array
from dataclasses import dataclass
from typing import Optional

from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixKey

from eval.sim.cost_model import CostModel
from eval.sim.engine import SimResult, Simulator, _DagState, _ProgramState
from eval.sim.policies import PolicySpec
from eval.traces.format import Program

ROUTING = ("round_robin", "consistent_hashing", "cache_aware")
LOAD_POLL_S = 10.0  # smg's worker load polling interval
OVERLOAD_TOKEN_USAGE = 0.8  # --worker-overload-token-usage
OVERLOAD_WAITING = 8  # --worker-overload-waiting-requests
CACHE_THRESHOLD = 0.3  # --cache-threshold
SPILL_ABS, SPILL_REL = 32, 1.5  # --balance-abs-threshold, --balance-rel-threshold


@dataclass
class WorkerLoad:
    token_usage: float
    waiting: int


class Ring:
    """A consistent-hash ring: each worker at `points` places, a key goes to the next point."""

    def __init__(self, workers: int, points: int = 160):
        entries = sorted((self._hash(f"worker-{w}#{i}"), w) for w in range(workers) for i in range(points))
        self.hashes = [h for h, _ in entries]
        self.owners = [w for _, w in entries]

    @staticmethod
    def _hash(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def owner(self, key: str, allowed: Optional[set[int]] = None) -> int:
        """The key's worker, or the next allowed one on the ring when it is left out."""
        i = bisect.bisect(self.hashes, self._hash(key)) % len(self.hashes)
        for k in range(len(self.hashes)):
            w = self.owners[(i + k) % len(self.hashes)]
            if allowed is None or w in allowed:
                return w
        return self.owners[i]


class Cluster:
    def __init__(self, programs: list[Program], cost: CostModel, policy: PolicySpec, workers: int, routing: str,
                 pool_tokens: Optional[int] = None, pins_count_as_used: bool = False):
        if routing not in ROUTING:
            raise ValueError(f"routing must be one of {ROUTING}, got {routing!r}")
        self.routing = routing
        self.pins_count_as_used = pins_count_as_used
        self.states = [_ProgramState(p, array("q", p.system_tokens), dag=_DagState.of(p) if p.is_dag else None)
                       for p in programs]
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = itertools.count()
        self.workers = [Simulator(programs, cost, policy, pool_tokens, cluster=self) for _ in range(workers)]
        self.ring = Ring(workers)
        self.next_rr = 0
        self.loads = [WorkerLoad(0.0, 0) for _ in range(workers)]
        self.next_poll_s = 0.0
        self.routed = [0] * workers
        self.moves = 0  # turns routed to another worker than the program's previous turn
        self.last_worker: dict[tuple[int, Optional[str]], int] = {}
        self.stalled = [False] * workers
        for index in range(len(self.states)):
            self.workers[0].start_program(index)

    def schedule(self, time_s: float, program_index: int, turn: int) -> None:
        heapq.heappush(self.events, (time_s, next(self.seq), program_index, turn))

    # ---- the gateway -------------------------------------------------------------------------
    def _poll(self, now: float) -> None:
        while self.next_poll_s <= now:
            for w, sim in enumerate(self.workers):
                cache = sim.cache
                used = sim.pool_tokens - cache.free_tokens()
                if not self.pins_count_as_used and cache.pin_mode == "hard":
                    used -= min(used, cache.pinned_tokens())
                self.loads[w] = WorkerLoad(used / sim.pool_tokens, len(sim.waiting))
            self.next_poll_s += LOAD_POLL_S

    def _allowed(self) -> set[int]:
        under = {w for w, load in enumerate(self.loads)
                 if load.token_usage < OVERLOAD_TOKEN_USAGE and load.waiting < OVERLOAD_WAITING}
        return under or set(range(len(self.workers)))  # all overloaded: the gate leaves none out

    def _in_flight(self, w: int) -> int:
        sim = self.workers[w]
        return len(sim.waiting) + len(sim.running)

    def route(self, program_index: int, turn: int) -> int:
        allowed = self._allowed()
        program = self.states[program_index].program
        if self.routing == "round_robin":
            order = [(self.next_rr + k) % len(self.workers) for k in range(len(self.workers))]
            w = next(w for w in order if w in allowed)
            self.next_rr = (w + 1) % len(self.workers)
            return w
        if self.routing == "consistent_hashing":
            return self.ring.owner(program.program_id, allowed)
        prompt = self.workers[0].prompt_of(program_index, turn)
        key = RadixKey(prompt)
        flights = [self._in_flight(w) for w in range(len(self.workers))]
        mean = sum(flights) / len(flights)
        best, best_share = None, 0.0
        for w in sorted(allowed):
            share = self.workers[w].cache.match_prefix(MatchPrefixParams(key=key)).device_prefix_len / max(1, len(prompt))
            if share > best_share:
                best, best_share = w, share
        if best is not None and best_share >= CACHE_THRESHOLD:
            spills = flights[best] > mean + SPILL_ABS and flights[best] > SPILL_REL * mean
            if not spills:
                return best
        return min(sorted(allowed), key=lambda w: flights[w])

    # ---- time --------------------------------------------------------------------------------
    def run(self) -> SimResult:
        while True:
            busy = [w for w, sim in enumerate(self.workers) if sim.busy and not self.stalled[w]]
            behind = min(busy, key=lambda w: self.workers[w].now) if busy else None
            if self.events and (behind is None or self.events[0][0] <= self.workers[behind].now):
                at, _, program_index, turn = heapq.heappop(self.events)
                for w, sim in enumerate(self.workers):
                    if self.stalled[w]:  # time passed: what it waited for may have come
                        sim.now = max(sim.now, at)
                        self.stalled[w] = False
                self._poll(at)
                w = self.route(program_index, turn)
                agent = self.states[program_index].program.turns[turn].agent_id
                previous = self.last_worker.get((program_index, agent))
                self.moves += previous is not None and previous != w
                self.last_worker[(program_index, agent)] = w
                self.routed[w] += 1
                self.workers[w].deliver(program_index, turn, at)
                continue
            if behind is None:
                if any(sim.busy for sim in self.workers):
                    stuck = sum(len(sim.waiting) for sim in self.workers)
                    raise RuntimeError(f"deadlock: {stuck} requests wait and no event is left")
                break
            if not self.workers[behind].iterate():
                self.stalled[behind] = True
        return self.workers[0].result()


def simulate_cluster(programs: list[Program], cost: CostModel, policy: PolicySpec, workers: int, routing: str,
                     **kwargs) -> tuple[SimResult, Cluster]:
    cluster = Cluster(programs, cost, policy, workers, routing, **kwargs)
    return cluster.run(), cluster
