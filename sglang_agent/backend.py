"""The composition root: the one place that builds the agent cache, the controller, the host tier
and the metrics, and wires them (nothing else constructs them or imports across them). Upstream
reaches all of it through `AgentBackend`, whose every entry point is guarded: an exception of ours
is logged once, counted (`internal_errors`, `sglang:agent_internal_errors_total`), the session it
concerned is dropped, and SGLang carries on with its own behaviour.

    server:     --radix-cache-backend agent -> agent_radix_cache_factory(ctx) -> the cache, with
                cache.agent_backend set (patches/ find the backend there)
    simulator:  build_backend(pool_tokens, args, ...) over CPU pools, driven on a simulated clock
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Optional

from sglang_agent.cache.agent_radix_cache import AgentRadixCache, RequestListener
from sglang_agent.config import AgentServerArgs
from sglang_agent.controller import AgentController, HostTier, LoadProbe, LoadSnapshot
from sglang_agent.hints import HintError
from sglang_agent.policy.clock import StepClock
from sglang_agent.policy.workflow import WorkflowPace
from sglang_agent.server import scheduler_side

logger = logging.getLogger(__name__)
# Fault injection for the tests: comma-separated entry points that raise (e.g. "turn_finished,tick").
FAULT_ENV = "SGLANG_AGENT_FAULT_INJECT"
# After this many consecutive failures of one entry point, agent behaviour stops (upstream's remains).
MAX_CONSECUTIVE_FAILURES = 3
# Tests: run check_integrity() of the cache and the controller after every hint and request event
# (a violation counts as an internal error, visible in /agent/stats).
CHECK_ENV = "SGLANG_AGENT_CHECK_INTEGRITY"


SESSION_ENTRY_POINTS = ("turn_finished", "request_dropped")


class InjectedFault(RuntimeError):
    pass


class AgentBackend(RequestListener):
    def __init__(self, cache: AgentRadixCache, controller: AgentController, clock: StepClock,
                 host_tier: Optional[HostTier] = None):
        self.cache = cache
        self.controller = controller
        self.clock = clock
        self.host_tier = host_tier
        self.metrics = None  # AgentMetrics when --enable-metrics (and on the rank that reports)
        self.disabled = False  # agent behaviour stopped after repeated internal errors
        self._faults = {f.strip() for f in os.environ.get(FAULT_ENV, "").split(",") if f.strip()}
        self._logged: set[tuple[str, str]] = set()
        self._consecutive: dict[str, int] = {}
        self._check = os.environ.get(CHECK_ENV) == "1"
        cache.listener = self

    # ---- the guard -------------------------------------------------------------------------------
    def _guard(self, name: str, fn: Callable, *args, session_id: Optional[str] = None, fallback: Any = None):
        if self.disabled:
            return fallback
        try:
            # Injected where our code has work to do (a session's event, or every step).
            if name in self._faults and (session_id is not None or name not in SESSION_ENTRY_POINTS):
                raise InjectedFault(f"injected fault in {name}")
            result = fn(*args)
            if session_id is not None or name not in SESSION_ENTRY_POINTS:  # a no-op call proves nothing
                self._consecutive.pop(name, None)
            return result
        except HintError:
            raise
        except Exception as e:  # our bug must not take the scheduler, and everyone's requests, down
            self._internal_error(name, e, session_id)
            return fallback

    def _internal_error(self, name: str, error: Exception, session_id: Optional[str]) -> None:
        self.controller.stats.internal_errors += 1
        key = (name, type(error).__name__)
        if key not in self._logged:
            self._logged.add(key)
            logger.exception("sglang-agent: %s failed (session %r); dropping that session's agent state",
                             name, session_id)
        if session_id is not None:
            try:
                self.controller.drop_session(session_id)
            except Exception:
                logger.exception("sglang-agent: dropping session %r failed too", session_id)
        failures = self._consecutive[name] = self._consecutive.get(name, 0) + 1
        if failures >= MAX_CONSECUTIVE_FAILURES:
            self._disable(f"{name} failed {failures} times in a row")

    def _disable(self, why: str) -> None:
        logger.error("sglang-agent: agent behaviour stopped (%s); serving as upstream SGLang", why)
        for session_id in list(self.controller.sessions):
            try:
                self.controller.drop_session(session_id)
            except Exception:
                pass
        self.disabled = True

    def hook_failed(self, name: str, error: Exception) -> None:
        """A hook in patches/ raised (patches/contained.py): counted and logged as our own error."""
        try:
            self._internal_error(name, error, None)
        except Exception:
            logger.exception("sglang-agent: reporting a failed hook failed too")

    # ---- upstream's entry points ---------------------------------------------------------------
    def tick(self, now_s: float) -> None:
        """Once per scheduler step, with the time TP rank 0 read: the step clock moves, lapsed pins
        and host copies are let go, due reloads start, idle sessions are forgotten."""
        self.clock.tick(now_s)
        self._guard("tick", self.controller.on_step)
        self._push_metrics(force=False)
        if self._check and self.tp_group is not None:
            self._guard("tp_agreement", self.check_tp_agreement)

    def handle_hint(self, kind: str, body: dict, rid: Optional[str]) -> tuple[int, dict]:
        session_id = body.get("session_id") if isinstance(body, dict) else None
        if self.disabled:
            self._push_metrics(force=True)
            # Requests still run (as on upstream SGLang); only the hint routes say why nothing happens.
            if kind in ("bind", "unbind", "gone", "turn_outcome"):
                return 200, {"agent_disabled": True}
            if kind == "stats":
                return 200, {**self.snapshot(), "agent_disabled": True}
            return 503, {"error": "agent hints are off after repeated internal errors (see the server log)",
                         "status": 503}
        if kind == "stats":
            self._push_metrics(force=True)
            return 200, self.snapshot()
        try:
            answer = self._guard(f"hint:{kind}", scheduler_side.apply_hint, self.controller, kind, body, rid,
                                 session_id=session_id or self.controller.rid_to_session.get(rid or ""),
                                 fallback=_INTERNAL)
        except HintError as e:
            return e.status, e.to_body()
        if answer is _INTERNAL:
            return 500, {"error": f"internal error in the {kind} hint; the session's agent state was dropped",
                         "status": 500}
        self._checked()
        self._push_metrics(force=True)
        return 200, answer

    def _push_metrics(self, force: bool) -> None:
        """Metrics go on when agent behaviour is off (they are how one sees why)."""
        if self.metrics is None:
            return
        try:
            self.metrics.push() if force else self.metrics.maybe_push()
        except Exception:
            if ("metrics", "push") not in self._logged:
                self._logged.add(("metrics", "push"))
                logger.exception("sglang-agent: pushing the agent metrics failed")

    def request_entered(self, rid: str, prompt=None) -> None:
        self._guard("request_entered", self.controller.request_entered, rid, prompt)

    def turn_finished(self, req) -> None:  # RequestListener
        self._guard("turn_finished", self.controller.turn_finished, req,
                    session_id=self.controller.rid_to_session.get(req.rid))
        self._checked()

    def request_dropped(self, rid: str) -> None:  # RequestListener
        self._guard("request_dropped", self.controller.request_dropped, rid,
                    session_id=self.controller.rid_to_session.get(rid))
        self._checked()

    def _checked(self) -> None:
        if self._check:
            self._guard("check_integrity", self.check_integrity)

    def cache_reset(self) -> None:  # RequestListener
        self._guard("cache_reset", self.controller.on_cache_reset)

    def make_room_for_decode(self, fits: Callable[[], bool]) -> list[str]:
        """The running batch's next decode does not fit: pins give way before SGLang would retract
        or abort anything."""
        return self._guard("make_room_for_decode", self.controller.release_pins, fits, "decode", fallback=[])

    def make_room_for_admission(self, fits: Callable[[], bool]) -> list[str]:
        """Nothing runs and the head of the queue does not fit: pins give way (no deadlock)."""
        return self._guard("make_room_for_admission", self.controller.release_pins, fits, "admission", fallback=[])

    def unblock_stalled_head(self, rid: str, need_tokens: int, reserve_tokens: int) -> list[str]:
        """Requests run but the head of the queue has waited the stall bound for pins: they give way."""
        return self._guard("unblock_stalled_head", self.controller.unblock_stalled_head, rid, need_tokens,
                           reserve_tokens, fallback=[])

    # The critical-path reservation's admission (patches/admission_reservation.py).
    def reservation_active(self) -> bool:
        return not self.disabled and self.controller.reservation.enabled

    def is_critical_request(self, rid: str) -> bool:
        return self._guard("is_critical_request", self.controller.is_critical_request, rid, fallback=False)

    def queue_rank(self, rid: str) -> int:
        return self._guard("queue_rank", self.controller.queue_rank, rid, fallback=1)

    def begin_admission_round(self, waiting_critical_need_tokens: int) -> int:
        return self._guard("begin_admission_round", self.controller.begin_admission_round,
                           waiting_critical_need_tokens, fallback=0)

    def may_admit(self, rid: str, need_tokens: int, room_tokens: int) -> bool:
        return self._guard("may_admit", self.controller.may_admit, rid, need_tokens, room_tokens, fallback=True)

    def admitted(self, rid: str, tokens: int) -> None:
        self._guard("admitted", self.controller.admitted, rid, tokens)

    def program_arrival(self, rid: str) -> Optional[float]:
        return self._guard("program_arrival", self.controller.program_arrival, rid)

    def snapshot(self) -> dict:
        return {**self.controller.snapshot(), "tp_agreement_checks": self.tp_checks}

    def check_integrity(self) -> None:
        self.cache.check_integrity()
        self.controller.check_integrity()

    def state_digest(self, times: bool = True) -> str:
        """The cache's digest plus every session's state: equal on TP ranks that agree."""
        import hashlib

        sessions = sorted((s.session_id, s.state.value, sorted(s.running_rids), s.tool and s.tool.hold)
                          for s in self.controller.sessions.values())
        return hashlib.sha256((self.cache.state_digest(times) + repr(sessions)).encode()).hexdigest()

    tp_group = None  # the tree cache's TP group when tp_size > 1 (set by the factory)
    tp_checks = 0

    def check_tp_agreement(self) -> None:
        """Tests (SGLANG_AGENT_CHECK_INTEGRITY=1, --tp-size > 1): every rank's digest, gathered over
        the tree cache's TP group, must be the same after every step."""
        import torch.distributed as dist

        digests = [None] * dist.get_world_size(group=self.tp_group)
        dist.all_gather_object(digests, self.state_digest(), group=self.tp_group)
        self.tp_checks += 1
        assert len(set(digests)) == 1, f"TP ranks diverged: {digests}"


_INTERNAL = object()


# ---- building it ---------------------------------------------------------------------------------
def _wire(cache: AgentRadixCache, args: AgentServerArgs, clock: StepClock, pace: WorkflowPace,
          host_tier: Optional[HostTier], load_probe: LoadProbe) -> AgentBackend:
    controller = AgentController(cache, args, clock, load_probe=load_probe, host_tier=host_tier, pace=pace)
    return AgentBackend(cache, controller, clock, host_tier)


def build_backend(pool_tokens: int, args: AgentServerArgs, clock: Optional[StepClock] = None,
                  host_tier_factory: Optional[Callable[[AgentRadixCache], HostTier]] = None,
                  load_probe: LoadProbe = LoadSnapshot) -> AgentBackend:
    """An agent backend over CPU pools sized in tokens (the simulator, benchmarks and tests)."""
    from sglang_agent.cache.cpu_pools import cpu_cache_params

    clock = clock or StepClock()
    pace = WorkflowPace()
    cache = AgentRadixCache(cpu_cache_params(pool_tokens), clock=clock, pin_mode=args.pin_mode, pace=pace)
    host_tier = host_tier_factory(cache) if host_tier_factory is not None else None
    return _wire(cache, args, clock, pace, host_tier, load_probe)


def agent_radix_cache_factory(ctx) -> AgentRadixCache:
    """`--radix-cache-backend agent`: SGLang's own builder with our cache class in place, then the
    controller, the host tier (with --enable-hierarchical-cache) and the metrics around it."""
    from sglang.srt.mem_cache.registry import create_unified_radix_cache

    args = AgentServerArgs.from_env()
    clock = StepClock()
    pace = WorkflowPace()
    cache_class = functools.partial(AgentRadixCache, clock=clock, pin_mode=args.pin_mode, pace=pace)
    cache = create_unified_radix_cache(ctx, cache_class=cache_class)
    host_tier = None
    if cache.has_host_tier():
        from sglang_agent.cache import host_copy
        from sglang_agent.cache.host_tier import HiCacheHostTier

        host_tier = HiCacheHostTier(cache, clock, args.host_bandwidth_gbps)
        if os.environ.get(host_copy.ENGINE_ENV) == "triton":
            # Compile our copy kernel now, not at the first write-through in the middle of serving.
            host_copy.precompile(cache.cache_controller.mem_pool_host)
    backend = _wire(cache, args, clock, pace, host_tier, LoadSnapshot)
    # Eviction runs inside upstream's walk: a failure there falls back to upstream's own key.
    strategy = cache.tree_core.eviction_strategy
    strategy.get_priority = _guard_priority(backend, strategy)
    if getattr(ctx.server_args, "enable_metrics", False) and _reports_metrics():
        from sglang_agent.server import metrics

        backend.metrics = metrics.attach(cache, backend)
    if getattr(cache, "tp_world_size", 1) > 1:
        backend.tp_group = cache.tp_group
    cache.agent_backend = backend
    return cache


def _guard_priority(backend: AgentBackend, strategy) -> Callable:
    agent_key, base_key = strategy.get_priority, strategy.base.get_priority

    def get_priority(node):
        result = backend._guard("eviction_key", agent_key, node, fallback=_INTERNAL)
        return (0, base_key(node)) if result is _INTERNAL else result

    return get_priority


def _reports_metrics() -> bool:
    """One set of agent metrics per DP rank: TP ranks hold identical state, so only TP rank 0
    reports (otherwise every counter is multiplied by the TP size)."""
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    return parallel.tp_rank == 0 and parallel.pp_rank == 0


RADIX_CACHE_BACKEND = "agent"


def register_backend() -> None:
    """Make `--radix-cache-backend agent` build the agent backend (SGLang's own registry)."""
    from sglang.srt.mem_cache.registry import get_radix_cache_factory, register_radix_cache_backend

    if get_radix_cache_factory(RADIX_CACHE_BACKEND) is None:
        register_radix_cache_backend(RADIX_CACHE_BACKEND, agent_radix_cache_factory)
