"""Where each cached token will next be read: a radix trie of every prompt a trace will send, and
a range-min over the estimated arrival times of the turns not yet admitted (pure, no cache).

A cached prefix `path` is *used* by a pending turn when the turn's prompt starts with it (the
admission's prefix match would read its last token). Every prompt that starts with `path` ends in
the trie's subtree at `path`'s end, and a depth-first numbering makes each subtree one range of
turn slots, so the next use of `path` is one range-min: O(len(path)) to locate, O(log turns) to
read, and an arrival estimate changes in O(log turns).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Optional

TurnKey = Hashable  # names a turn, e.g. (program index, turn index)


@dataclass(eq=False)
class TrieNode:
    edge: array  # the tokens on the edge into this node (empty at the root)
    children: dict[int, "TrieNode"] = field(default_factory=dict)  # first token -> child
    ending: list = field(default_factory=list)  # turns whose prompt ends exactly here
    slots: range = range(0)  # the turn slots of this node's subtree (set by `_number`)


@dataclass(frozen=True)
class TriePosition:
    """A point in the trie: `matched` tokens into `node.edge` (len(edge): at the node itself)."""

    node: TrieNode
    matched: int


def common_prefix_len(a: array, b: array) -> int:
    """Length of the common prefix; slice comparisons run in C (binary search on a mismatch)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class MinTree:
    """Point update, range minimum (an iterative segment tree)."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self.values = [math.inf] * (2 * self.size)

    def set(self, index: int, value: float) -> None:
        i = index + self.size
        self.values[i] = value
        i //= 2
        while i:
            self.values[i] = min(self.values[2 * i], self.values[2 * i + 1])
            i //= 2

    def min(self, lo: int, hi: int) -> float:
        best = math.inf
        lo += self.size
        hi += self.size
        while lo < hi:
            if lo & 1:
                best = min(best, self.values[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                best = min(best, self.values[hi])
            lo //= 2
            hi //= 2
        return best


class FutureUseIndex:
    def __init__(self, prompts: Iterable[tuple[TurnKey, array]]):
        self.root = TrieNode(array("q"))
        for turn, prompt in prompts:
            self._insert(turn, prompt)
        self.slot_of: dict[TurnKey, int] = {}
        self._number()
        self.arrivals = MinTree(len(self.slot_of))  # every turn: not pending (inf) until estimated

    # ---- building ------------------------------------------------------------------------------
    def _insert(self, turn: TurnKey, prompt: array) -> None:
        node, pos = self.root, 0
        while pos < len(prompt):
            child = node.children.get(prompt[pos])
            if child is None:
                child = node.children[prompt[pos]] = TrieNode(prompt[pos:])
                node, pos = child, len(prompt)
                break
            matched = common_prefix_len(child.edge, prompt[pos:pos + len(child.edge)])
            if matched < len(child.edge):  # the prompt leaves or ends inside the edge: split it
                upper = TrieNode(child.edge[:matched], {child.edge[matched]: child})
                child.edge = child.edge[matched:]
                node.children[prompt[pos]] = upper
                child = upper
            node, pos = child, pos + matched
        node.ending.append(turn)

    def _number(self) -> None:
        stack: list[tuple[TrieNode, bool]] = [(self.root, False)]
        starts: dict[int, int] = {}
        while stack:
            node, done = stack.pop()
            if done:
                node.slots = range(starts.pop(id(node)), len(self.slot_of))
                continue
            starts[id(node)] = len(self.slot_of)
            for turn in node.ending:
                self.slot_of[turn] = len(self.slot_of)
            stack.append((node, True))
            stack.extend((child, False) for child in node.children.values())

    # ---- locating ------------------------------------------------------------------------------
    @property
    def start(self) -> TriePosition:
        return TriePosition(self.root, 0)

    def advance(self, at: Optional[TriePosition], tokens: array) -> Optional[TriePosition]:
        """The position `tokens` further down from `at`; None once no future prompt follows them."""
        if at is None:
            return None
        node, matched, pos = at.node, at.matched, 0
        while pos < len(tokens):
            if matched == len(node.edge):
                node = node.children.get(tokens[pos])
                if node is None:
                    return None
                matched = 0
            take = min(len(node.edge) - matched, len(tokens) - pos)
            if node.edge[matched:matched + take] != tokens[pos:pos + take]:
                return None
            matched, pos = matched + take, pos + take
        return TriePosition(node, matched)

    # ---- next use --------------------------------------------------------------------------------
    def set_arrival(self, turn: TurnKey, arrival_s: float) -> None:
        """The turn's (estimated) arrival; math.inf once it is admitted (it reads nothing more)."""
        self.arrivals.set(self.slot_of[turn], arrival_s)

    def next_use_s(self, at: Optional[TriePosition]) -> float:
        """Earliest arrival of a pending turn whose prompt runs through `at` (inf: none will).
        The root position (the empty prefix) is read by no one."""
        if at is None or at.node is self.root:
            return math.inf
        return self.arrivals.min(at.node.slots.start, at.node.slots.stop)
