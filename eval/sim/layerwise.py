"""When a prefill batch ends if part of its prefix is still being loaded from host memory, layer by
layer (pure).

SGLang's HiCache loads a batch's host-only prefix back with layer-wise synchronisation
(`load_back` + the per-layer `wait_event` in the forward pass): layer i's attention waits only for
layer i's KV, so the copy overlaps the prefill compute instead of preceding it. With a copy of
duration d that started at s (on a shared link: whenever the link got to it) and L layers, layer
i's KV lands at s + (i+1) d / L; with a batch compute of C seconds, layer i runs for C / L once
both its KV and layer i-1 are done. The batch ends at the latest of
    start + C                  (compute alone),
    s + d / L + C              (the first layer waits for its KV, the rest follows),
    s + d + C / L              (the last layer waits for the whole copy),
the maximum over layers of a line in the layer index, so one of its two ends. For a copy that
starts with the batch this is max(C, d) plus one layer's share of the shorter one, rather than
C + d. Several copies: the same bounds for each. A copy that landed before the batch costs
nothing. Assumes equal layers (true of the dense models profiled here).
"""

from __future__ import annotations

from typing import Iterable

from eval.sim.link import Transfer


def prefill_end_s(start_s: float, compute_s: float, loads: Iterable[Transfer], num_layers: int) -> float:
    end_s = start_s + compute_s
    for load in loads:
        duration_s = load.end_s - load.start_s
        end_s = max(end_s, load.start_s + duration_s / num_layers + compute_s, load.end_s + compute_s / num_layers)
    return end_s
