"""AgentRadixCache on CPU tensors: unit tests and a hypothesis state machine checked against a
small reference model (what is cached, what is pinned, where every KV slot is)."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from sglang_agent.cache.cpu_pools import cpu_cache_params
from sglang_agent.cache.agent_radix_cache import AgentRadixCache
from sglang_agent.cache.node import AgentTreeNode
from sglang_agent.config import AgentServerArgs
from sglang_agent.controller import AgentController

POOL = 48


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_cache(pool=POOL, pin_mode="soft"):
    clock = FakeClock()
    return AgentRadixCache(cpu_cache_params(pool), clock=clock, pin_mode=pin_mode), clock


def insert(cache, key):
    allocator = cache.token_to_kv_pool_allocator
    short = len(key) - allocator.available_size()
    if short > 0:
        cache.evict(EvictParams(num_tokens=short))
    if allocator.available_size() < len(key):
        return None
    return cache.insert(InsertParams(key=RadixKey(list(key)), value=allocator.alloc(len(key))))


def match(cache, key):
    return cache.match_prefix(MatchPrefixParams(key=RadixKey(list(key))))


def all_nodes(cache):
    stack, out = [cache.tree_core.root_node], []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children.values())
    return out[1:]


def free_slots(allocator):
    parts = [allocator.free_pages]
    if getattr(allocator, "release_pages", None) is not None and len(allocator.release_pages):
        parts.append(allocator.release_pages)
    return torch.cat(parts)


# ---- unit tests ----------------------------------------------------------------------------

def test_pinned_session_survives_eviction_pressure_and_unpinned_goes_first():
    cache, clock = make_cache(100)
    pinned = insert(cache, range(30))
    cache.record_turn("agent", pinned.last_device_node)
    assert cache.pin("agent", ttl_deadline=10.0) == 30
    insert(cache, range(100, 130))
    insert(cache, range(200, 240))
    cache.evict(EvictParams(num_tokens=40))  # needs every unpinned token first
    assert match(cache, range(30)).device_prefix_len == 30
    assert match(cache, range(100, 130)).device_prefix_len == 0
    assert cache.pinned_tokens() == 30


def test_pins_yield_to_admission_closest_expiry_first():
    cache, clock = make_cache(60)
    for session, base, deadline in (("late", 0, 50.0), ("soon", 100, 20.0)):
        result = insert(cache, range(base, base + 30))
        cache.record_turn(session, result.last_device_node)
        cache.pin(session, deadline)
    # Nothing unpinned is left: a new request takes the pin that expires first.
    assert insert(cache, range(500, 510)) is not None
    assert match(cache, range(100, 130)).device_prefix_len < 30
    assert match(cache, range(0, 30)).device_prefix_len == 30


def test_expired_pin_is_plain_lru():
    cache, clock = make_cache(100)
    old = insert(cache, range(30))
    cache.record_turn("agent", old.last_device_node)
    cache.pin("agent", ttl_deadline=5.0)
    insert(cache, range(100, 130))
    clock.now = 6.0
    assert cache.expire_pins(clock.now) == ["agent"]  # the step clock's tick lets it go
    assert cache.pinned_tokens() == 0
    cache.evict(EvictParams(num_tokens=30))
    # LRU again: the older (formerly pinned) prefix goes first.
    assert match(cache, range(30)).device_prefix_len == 0
    assert match(cache, range(100, 130)).device_prefix_len == 30


def test_split_keeps_pin_on_both_halves():
    cache, clock = make_cache(100)
    first = insert(cache, range(20))
    cache.record_turn("agent", first.last_device_node)
    cache.pin("agent", 10.0)
    insert(cache, list(range(10)) + [99] * 10)  # splits the pinned node at 10
    assert cache.pinned_tokens() == 20
    insert(cache, range(300, 360))  # pool pressure: 60 unpinned tokens to place
    assert match(cache, range(20)).device_prefix_len == 20
    cache.unpin("agent")
    assert cache.pinned_tokens() == 0
    assert all(not n.pin_deadlines for n in all_nodes(cache))


def test_close_session_releases_pins_and_ownership():
    cache, clock = make_cache(100)
    turn = insert(cache, range(25))
    cache.record_turn("agent", turn.last_device_node)
    cache.pin("agent", 10.0)
    cache.forget_session("agent")
    assert cache.pinned_tokens() == 0
    assert all(not n.step_sessions and not n.pin_deadlines for n in all_nodes(cache))


def test_no_hints_evicts_exactly_like_upstream_lru():
    keys = [list(range(b, b + n)) for b, n in ((0, 12), (0, 20), (100, 9), (5, 7), (200, 15), (100, 30))]
    caches = [AgentRadixCache(cpu_cache_params(64)), UnifiedRadixCache(cpu_cache_params(64))]
    for cache in caches:
        for key in keys:
            insert(cache, key)
            match(cache, keys[0])  # touch: recency matters
        cache.evict(EvictParams(num_tokens=25))
    probes = keys + [list(range(3))]
    assert [match(caches[0], k).device_prefix_len for k in probes] == [
        match(caches[1], k).device_prefix_len for k in probes
    ]


def test_tree_nodes_are_agent_nodes():
    cache, _ = make_cache()
    insert(cache, range(5))
    assert all(isinstance(n, AgentTreeNode) for n in all_nodes(cache))
    assert isinstance(cache.tree_core.root_node, AgentTreeNode)


# ---- property test -------------------------------------------------------------------------

tokens = st.lists(st.integers(0, 3), min_size=1, max_size=12)
sessions = st.sampled_from(["s0", "s1", "s2"])


class AgentCacheMachine(RuleBasedStateMachine):
    pin_mode = "soft"

    def __init__(self):
        super().__init__()
        self.cache, self.clock = make_cache(pin_mode=self.pin_mode)
        self.controller = AgentController(self.cache, AgentServerArgs(pin_mode=self.pin_mode), self.clock)
        self.inserted: set[tuple] = set()
        self.locks = []
        # reference pins: session -> (key, deadline, longest prefix still never evicted)
        self.pins: dict[str, list] = {}

    # reference model ----------------------------------------------------------------------
    def ref_lcp(self, key):
        best = 0
        for k in self.inserted:
            n = 0
            while n < min(len(k), len(key)) and k[n] == key[n]:
                n += 1
            best = max(best, n)
        return best

    def ref_pinned_prefixes(self):
        # Until the tick, an expired pin still counts (and in hard mode still holds its lock).
        return {tuple(key[:i]) for key, deadline, alive in self.pins.values() for i in range(1, alive + 1)}

    # rules --------------------------------------------------------------------------------
    @rule(key=tokens)
    def insert(self, key):
        before = self.snapshot_pins()
        result = insert(self.cache, key)
        self.check_eviction_order(before)
        if result is not None:
            self.inserted.add(tuple(key))
            assert match(self.cache, key).device_prefix_len == len(key)

    @rule(key=tokens)
    def match(self, key):
        assert match(self.cache, key).device_prefix_len <= self.ref_lcp(key)

    @rule(key=tokens)
    def lock(self, key):
        m = match(self.cache, key)
        if m.device_prefix_len > 0:
            self.locks.append(self.cache.lock(m.last_device_node))

    @precondition(lambda self: self.locks)
    @rule(data=st.data())
    def unlock(self, data):
        self.cache.unlock(self.locks.pop(data.draw(st.integers(0, len(self.locks) - 1))))

    @rule(session=sessions, key=tokens, ttl=st.floats(0.5, 20))
    def pin(self, session, key, ttl):
        m = match(self.cache, key)
        if m.device_prefix_len == 0:
            return
        self.cache.record_turn(session, m.last_device_node)
        deadline = self.clock.now + ttl
        self.cache.pin(session, deadline)
        self.pins[session] = [list(key[: m.device_prefix_len]), deadline, m.device_prefix_len]

    @rule(session=sessions)
    def unpin(self, session):
        self.cache.unpin(session)
        self.pins.pop(session, None)

    @rule(session=sessions)
    def close(self, session):
        self.cache.forget_session(session)
        self.pins.pop(session, None)

    @rule(dt=st.floats(0.1, 10))
    def advance(self, dt):
        self.clock.now += dt
        # The step clock's tick: expired pins are let go here and only here.
        for session in self.cache.expire_pins(self.clock.now):
            self.pins.pop(session, None)

    @rule(n=st.integers(1, POOL))
    def evict(self, n):
        before = self.snapshot_pins()
        self.cache.evict(EvictParams(num_tokens=n))
        self.check_eviction_order(before)

    @rule(n=st.integers(1, POOL))
    def release_for_admission(self, n):
        live = {s: st[1] for s, st in self.pins.items()}
        released = self.controller.release_pins(lambda: self.cache.free_tokens() >= n, "admission")
        kept = [d for s, d in live.items() if s not in released]
        assert all(live[s] <= min(kept, default=float("inf")) for s in released), "not closest to expiry first"
        for session in released:
            self.pins.pop(session, None)
        if released:
            assert self.cache.free_tokens() >= n or not self.cache.pin_holdings()

    # eviction-order check -----------------------------------------------------------------
    def snapshot_pins(self):
        """Evictable leaves before an eviction, each with its live pin deadline (or None)."""
        now = self.clock.now
        leaves = {}
        for node in self.cache.tree_core.evictable_device_leaves:
            deadline = node.ttl_deadline
            leaves[node] = deadline if deadline is not None and deadline > now else None
        return leaves

    def check_eviction_order(self, before):
        alive_before = {s: st[2] for s, st in self.pins.items()}
        self._check_order(before)
        if self.pin_mode == "hard":  # a live hard pin is never evicted
            for s, alive in alive_before.items():
                assert self.pins[s][2] == alive, f"hard pin of {s} lost KV"

    def _check_order(self, before):
        evicted = {n for n in before if n.component_data[0].value is None or n.parent is None}
        survivors = set(before) - evicted
        evicted_pins = [before[n] for n in evicted if before[n] is not None]
        if evicted_pins:
            # A live pin was taken only after every unpinned evictable leaf was gone...
            assert all(before[n] is not None for n in survivors)
            # ...and only after every pin that expires sooner.
            latest = max(evicted_pins)
            assert all(before[n] > latest - 1e-9 for n in survivors if before[n] is not None)
        self._refresh_alive()

    def _refresh_alive(self):
        for state in self.pins.values():
            state[2] = min(state[2], match(self.cache, state[0]).device_prefix_len)

    # invariants ---------------------------------------------------------------------------
    @invariant()
    def sizes_add_up(self):
        device_tokens = sum(n.device_tokens for n in all_nodes(self.cache))
        assert self.cache.evictable_size() + self.cache.protected_size() == device_tokens

    @invariant()
    def every_slot_in_exactly_one_place(self):
        tree = self.cache.all_values_flatten()
        free = free_slots(self.cache.token_to_kv_pool_allocator)
        slots = torch.cat([tree.to(torch.int64), free.to(torch.int64)]).sort().values
        assert torch.equal(slots, torch.arange(1, POOL + 1)), "a KV slot leaked or was freed twice"

    @invariant()
    def pinned_tokens_match_reference(self):
        assert self.cache.pinned_tokens() == len(self.ref_pinned_prefixes())

    @invariant()
    def integrity(self):
        self.cache.check_integrity()


class HardPinMachine(AgentCacheMachine):
    pin_mode = "hard"


for machine in (AgentCacheMachine, HardPinMachine):
    machine.TestCase.settings = settings(
        max_examples=150, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
TestAgentCacheMachine = AgentCacheMachine.TestCase
TestHardPinMachine = HardPinMachine.TestCase


def test_pinned_tokens_drop_when_pressure_evicts_the_pin():
    # Found by the state machine: an evicted (deleted) node kept counting as pinned.
    cache, clock = make_cache()
    turn = insert(cache, [3])
    cache.record_turn("s0", turn.last_device_node)
    cache.pin("s0", 1.0)
    cache.evict(EvictParams(num_tokens=1))
    assert cache.pinned_tokens() == 0
    assert [h.exclusive_tokens for h in cache.pin_holdings()] == [0]


def test_hard_pin_is_protected_until_expiry_then_free():
    cache, clock = make_cache(60, pin_mode="hard")
    turn = insert(cache, range(30))
    cache.record_turn("agent", turn.last_device_node)
    cache.pin("agent", 10.0)
    assert cache.protected_size() == 30 and cache.evictable_size() == 0
    insert(cache, range(100, 125))
    assert insert(cache, range(200, 231)) is None  # 5 free + 25 evictable < 31: must wait
    assert match(cache, range(30)).device_prefix_len == 30
    clock.now = 11.0
    assert cache.protected_size() == 30  # an expired pin holds until the step clock ticks...
    cache.expire_pins(clock.now)  # ...and every TP rank ticks at the same step
    assert cache.evictable_size() == 30 and cache.protected_size() == 0  # the 25 went to the failed try
    assert insert(cache, range(200, 231)) is not None


def test_release_pins_for_admission_goes_by_expiry():
    cache, clock = make_cache(100, pin_mode="hard")
    controller = AgentController(cache, AgentServerArgs(), clock)
    for session, base, deadline in (("late", 0, 50.0), ("soon", 100, 20.0), ("mid", 200, 30.0)):
        result = insert(cache, range(base, base + 30))
        cache.record_turn(session, result.last_device_node)
        cache.pin(session, deadline)
    released = controller.release_pins(lambda: cache.free_tokens() >= 41, "admission")
    assert released == ["soon", "mid"]  # 10 free + 30 per pin
    assert [h.session_id for h in cache.pin_holdings()] == ["late"]
    assert controller.stats.pins_released_for_admission == 2 and controller.stats.pins_displaced == 2
