"""Cost model of one serving instance, derived from a profile's primitive numbers (model
shape, GPU datasheet figures, stated efficiencies); every number's source is in the profile."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class CostModel:
    name: str
    params: float
    num_layers: int
    hidden_size: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    num_gpus: int
    gpu_memory_bytes: float
    mem_fraction_static: float
    peak_flops: float
    prefill_mfu: float
    hbm_bytes_per_s: float
    decode_bw_efficiency: float
    iteration_overhead_s: float
    host_bytes_per_s: float
    max_prefill_tokens: int
    # Effective host link bandwidth per GPU and direction by the size of one transfer of scattered
    # token slots: ((bytes per GPU, bytes/s), ...) ascending in bytes. Small copies reach less of
    # the peak (the GPU kit: 74-78% at 8 MiB, 91-95% from 128 MiB up). Empty: `host_bytes_per_s`
    # for every size. h2d: host -> GPU (reloads); d2h: GPU -> host (offloads, write-through).
    h2d_bytes_per_s_by_size: tuple[tuple[float, float], ...] = ()
    d2h_bytes_per_s_by_size: tuple[tuple[float, float], ...] = ()

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_pool_tokens(self) -> int:
        free = self.num_gpus * self.gpu_memory_bytes * self.mem_fraction_static - self.weight_bytes
        return int(free // self.kv_bytes_per_token)

    def prefill_s(self, new_tokens: int, prefix_tokens: int = 0) -> float:
        """Dense FLOPs (2 x params per token) plus attention over the prefix and the chunk."""
        if new_tokens <= 0:
            return 0.0
        dense = 2 * self.params * new_tokens
        attention = 4 * self.num_layers * self.hidden_size * (new_tokens * prefix_tokens + new_tokens**2 / 2)
        return (dense + attention) / (self.num_gpus * self.peak_flops * self.prefill_mfu)

    def decode_step_s(self, batch_size: int, context_tokens: int) -> float:
        """Memory-bound: one read of the weights plus the KV of every running sequence."""
        if batch_size <= 0:
            return 0.0
        bytes_read = self.weight_bytes + context_tokens * self.kv_bytes_per_token
        return bytes_read / (self.num_gpus * self.hbm_bytes_per_s * self.decode_bw_efficiency)

    def reload_s(self, tokens: int) -> float:
        """One host -> GPU copy of `tokens` scattered slots on an idle link (queueing on a busy
        link is the simulator's, eval/sim/link.py); TP shards move in parallel, one link per GPU."""
        return self._link_s(tokens, self.h2d_bytes_per_s_by_size)

    def offload_s(self, tokens: int) -> float:
        """One GPU -> host copy (an offload or a write-through backup) on an idle link."""
        return self._link_s(tokens, self.d2h_bytes_per_s_by_size)

    def _link_s(self, tokens: int, by_size: tuple[tuple[float, float], ...]) -> float:
        if tokens <= 0:
            return 0.0
        per_gpu_bytes = tokens * self.kv_bytes_per_token / self.num_gpus
        return per_gpu_bytes / (interpolate_log(by_size, per_gpu_bytes) if by_size else self.host_bytes_per_s)

    def prefill_tokens_per_s(self) -> float:
        return 1.0 / self.prefill_s(1)


def interpolate_log(points: tuple[tuple[float, float], ...], x: float) -> float:
    """Piecewise linear in log(x) between measured points; the end points' values outside them
    (below the smallest measured copy this is optimistic: a smaller copy is slower still)."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return points[-1][1]


def load_profile(name_or_path: str) -> CostModel:
    path = Path(name_or_path)
    if not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
        raise FileNotFoundError(f"no cost profile {name_or_path!r}; known: {known}")
    raw = json.loads(path.read_text())
    fields = {k: (v["value"] if isinstance(v, dict) else v) for k, v in raw.items() if k not in ("description",)}
    for name in ("h2d_bytes_per_s_by_size", "d2h_bytes_per_s_by_size"):
        if name in fields:
            fields[name] = tuple((float(x), float(y)) for x, y in fields[name])
    # Fields with a default (the link curves) may be absent from older profiles.
    return CostModel(**{k: fields[k] for k in CostModel.__dataclass_fields__ if k in fields})
