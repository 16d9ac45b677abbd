"""A decoder with Llama-3.1-8B's shape (config.json numbers), random weights, in plain torch: the
matrix products, GQA attention over a KV cache, RoPE, RMSNorm and SwiGLU of one forward, so its
time is what the model's arithmetic and memory traffic cost on this GPU. No weights are downloaded
and no serving engine is involved: SGLang's own kernels (FlashInfer/FA3 paged attention, fused
norms) would be somewhat faster; see model_costs for how the numbers are used."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Shape:
    layers: int = 32  # meta-llama/Llama-3.1-8B config.json num_hidden_layers
    hidden: int = 4096  # hidden_size
    heads: int = 32  # num_attention_heads
    kv_heads: int = 8  # num_key_value_heads
    head_dim: int = 128  # hidden_size / num_attention_heads
    intermediate: int = 14336  # intermediate_size
    vocab: int = 128256  # vocab_size
    rope_theta: float = 500000.0  # rope_theta

    @property
    def params(self) -> int:
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp + 2 * self.hidden) + 2 * self.vocab * self.hidden + self.hidden

    @property
    def kv_bytes_per_token(self) -> int:  # bf16
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


LLAMA_3_1_8B = Shape()
TINY = Shape(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=256)


class Model:
    def __init__(self, shape: Shape, device: torch.device, dtype: torch.dtype = torch.bfloat16, seed: int = 0):
        self.shape, self.device, self.dtype = shape, device, dtype
        gen = torch.Generator(device=device).manual_seed(seed)

        def w(*size: int) -> torch.Tensor:
            return (torch.randn(size, generator=gen, device=device, dtype=torch.float32) * 0.02).to(dtype)

        s = shape
        qkv = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.embed = w(s.vocab, s.hidden)
        self.lm_head = w(s.hidden, s.vocab)
        self.norm = torch.ones(s.hidden, device=device, dtype=dtype)
        self.layers = [dict(attn_norm=torch.ones(s.hidden, device=device, dtype=dtype), wqkv=w(s.hidden, qkv),
                            wo=w(s.heads * s.head_dim, s.hidden), mlp_norm=torch.ones(s.hidden, device=device, dtype=dtype),
                            w_gate_up=w(s.hidden, 2 * s.intermediate), w_down=w(s.intermediate, s.hidden))
                       for _ in range(s.layers)]
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, device=device, dtype=torch.float32) / s.head_dim))
        self.inv_freq = inv_freq

    def param_count(self) -> int:
        per_layer = sum(t.numel() for t in self.layers[0].values())
        return per_layer * len(self.layers) + self.embed.numel() + self.lm_head.numel() + self.norm.numel()

    def kv_cache(self, batch: int, tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer K and V of shape [batch, kv_heads, tokens, head_dim], random (a cached prefix's
        values do not change what attending over it costs)."""
        s = self.shape
        return [(torch.randn(batch, s.kv_heads, tokens, s.head_dim, device=self.device, dtype=self.dtype),
                 torch.randn(batch, s.kv_heads, tokens, s.head_dim, device=self.device, dtype=self.dtype))
                for _ in range(s.layers)]

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [T, d/2]
        cos, sin = freqs.cos().to(x.dtype)[:, None, :], freqs.sin().to(x.dtype)[:, None, :]  # [T, 1, d/2]
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-5)

    def _mlp(self, layer: dict, x: torch.Tensor) -> torch.Tensor:
        gate, up = (self._rms(x, layer["mlp_norm"]) @ layer["w_gate_up"]).chunk(2, dim=-1)
        return x + (F.silu(gate) * up) @ layer["w_down"]

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]], prefix: int) -> torch.Tensor:
        """One sequence: ids [N] are new tokens after `prefix` cached ones; `cache` holds at least
        prefix + N slots. Writes the new K/V into the cache; returns the last token's logits."""
        s, n = self.shape, ids.numel()
        positions = torch.arange(prefix, prefix + n, device=self.device)
        x = self.embed[ids]
        rep = s.heads // s.kv_heads
        for layer, (k_cache, v_cache) in zip(self.layers, cache):
            q, k, v = (self._rms(x, layer["attn_norm"]) @ layer["wqkv"]).split(
                [s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], dim=-1)
            q = self._rope(q.view(n, s.heads, s.head_dim), positions).transpose(0, 1)[None]
            k = self._rope(k.view(n, s.kv_heads, s.head_dim), positions).transpose(0, 1)
            k_cache[0, :, prefix:prefix + n] = k
            v_cache[0, :, prefix:prefix + n] = v.view(n, s.kv_heads, s.head_dim).transpose(0, 1)
            keys = k_cache[:, :, :prefix + n].repeat_interleave(rep, dim=1)
            values = v_cache[:, :, :prefix + n].repeat_interleave(rep, dim=1)
            if prefix == 0:
                attn = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
            else:  # new tokens see the whole prefix: the causal mask aligned to the bottom right
                from torch.nn.attention.bias import causal_lower_right

                attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=causal_lower_right(n, prefix + n))
            x = x + attn[0].transpose(0, 1).reshape(n, s.heads * s.head_dim) @ layer["wo"]
            x = self._mlp(layer, x)
        return self._rms(x[-1:], self.norm) @ self.lm_head

    @torch.inference_mode()
    def decode(self, ids: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]], position: int) -> torch.Tensor:
        """One step of a batch: ids [B], every sequence with `position` cached tokens; the new K/V
        go to slot `position`; attention reads slots [0, position]. GQA without copying the cache:
        a KV head's query heads are its query rows."""
        s, b = self.shape, ids.numel()
        rep = s.heads // s.kv_heads
        positions = torch.full((1,), position, device=self.device)
        x = self.embed[ids]
        for layer, (k_cache, v_cache) in zip(self.layers, cache):
            q, k, v = (self._rms(x, layer["attn_norm"]) @ layer["wqkv"]).split(
                [s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], dim=-1)
            q = self._rope(q.view(b, s.heads, s.head_dim), positions).view(b, s.kv_heads, rep, s.head_dim)
            k_cache[:, :, position] = self._rope(k.view(b, s.kv_heads, s.head_dim), positions)
            v_cache[:, :, position] = v.view(b, s.kv_heads, s.head_dim)
            attn = F.scaled_dot_product_attention(q, k_cache[:, :, :position + 1], v_cache[:, :, :position + 1])
            x = x + attn.reshape(b, s.heads * s.head_dim) @ layer["wo"]
            x = self._mlp(layer, x)
        return (self._rms(x, self.norm) @ self.lm_head).argmax(dim=-1)
