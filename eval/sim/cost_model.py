"""Cost model of one serving instance, derived from a profile's primitive numbers (model
shape, GPU datasheet figures, stated efficiencies); every number's source is in the profile."""

from __future__ import annotations

import json
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
        return tokens * self.kv_bytes_per_token / (self.num_gpus * self.host_bytes_per_s)

    def prefill_tokens_per_s(self) -> float:
        return 1.0 / self.prefill_s(1)


def load_profile(name_or_path: str) -> CostModel:
    path = Path(name_or_path)
    if not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
        raise FileNotFoundError(f"no cost profile {name_or_path!r}; known: {known}")
    raw = json.loads(path.read_text())
    fields = {k: (v["value"] if isinstance(v, dict) else v) for k, v in raw.items() if k not in ("description",)}
    return CostModel(**{k: fields[k] for k in CostModel.__dataclass_fields__})
