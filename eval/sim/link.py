"""One GPU's PCIe link to host memory, shared by every KV copy, one queue per direction (pure:
time is passed in).

Copies in one direction queue on one link in the order they are issued (FIFO): the GPU kit
measured two host->GPU copies at once sharing 55.3 GB/s in all, what one alone gets
(eval/results/gpu/link.json, `same_way_total_gbps`). The two directions are independent: the copy
engine is full duplex (97.3 GB/s with both at once, against 51.3 GB/s GPU->host and 55.2 GB/s
host->GPU alone), so offloads and HiCache's write-through backups (GPU->host) never delay a
reload (host->GPU). Our Triton kernel is not duplex (49.8 GB/s in all with both at once), but the
server's default copy engine is upstream's, which is modelled here.

A copy's duration on an idle link comes from the cost model (effective bandwidth for scattered
slots by copy size, eval/sim/cost_model.py); this module adds the queueing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Transfer:
    """One copy on a link: issued, started when the link got to it, landed."""

    tokens: int
    issued_s: float
    start_s: float
    end_s: float

    @property
    def queued_s(self) -> float:
        return self.start_s - self.issued_s


@dataclass
class LinkStats:
    transfers: int = 0
    tokens: int = 0
    busy_s: float = 0.0  # time the link spent copying
    queued_s: float = 0.0  # summed over copies: issue to start


class Link:
    """One direction of one GPU's host link: a FIFO of copies."""

    def __init__(self, duration_s: Callable[[int], float]):
        self.duration_s = duration_s
        self.free_at_s = 0.0  # when the last queued copy lands
        self.stats = LinkStats()

    def submit(self, at_s: float, tokens: int) -> Transfer:
        """Queue a copy of `tokens` issued at `at_s`: it starts when every copy issued before it
        has landed."""
        start_s = max(at_s, self.free_at_s)
        end_s = start_s + self.duration_s(tokens)
        self.free_at_s = end_s
        self.stats.transfers += 1
        self.stats.tokens += tokens
        self.stats.busy_s += end_s - start_s
        self.stats.queued_s += start_s - at_s
        return Transfer(tokens, at_s, start_s, end_s)


@dataclass
class HostLinks:
    """Both directions of one GPU's link (one simulated instance: with TP, every GPU's link at once;
    the cost model divides the bytes among them)."""

    h2d: Link  # reloads: HiCache load_back, our tier's prefetches
    d2h: Link  # offloads and write-through backups

    @classmethod
    def of(cls, cost) -> "HostLinks":
        return cls(Link(cost.reload_s), Link(cost.offload_s))

    def summary(self, span_s: float) -> dict:
        """Link utilisation over `span_s` of simulated time, and the mean wait of a copy for the link."""
        out = {}
        for name, link in (("h2d", self.h2d), ("d2h", self.d2h)):
            s = link.stats
            out[f"{name}_busy_frac"] = s.busy_s / span_s if span_s > 0 else 0.0
            out[f"{name}_queued_s_avg"] = s.queued_s / s.transfers if s.transfers else 0.0
            out[f"{name}_tokens"] = s.tokens
        return out
