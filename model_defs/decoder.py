"""The decoder every supported family shares, written in IR ops.

Llama, Qwen2, Qwen3 and Mistral differ only in config switches (qkv bias, q/k norm, sliding
windows, tied embeddings); the family files map config and weight names onto this module.
Adds and norms are written plainly (add, then `kiln.rms_norm`): fusing them is the job of the
passes, not of the model. With tensor parallelism (tp_size > 1) each rank holds a shard of the
column-parallel (qkv, gate_up) and row-parallel (o, down) weights, and a `kiln.all_reduce`
follows every row-parallel linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import ir.ops  # noqa: F401  (registers torch.ops.kiln.*)
from kiln.errors import KilnError
from model_defs.attn_metadata import AttnMetadata
from model_defs.config import ModelConfig
from model_defs.rope import cos_sin_cache

kiln = torch.ops.kiln


@dataclass(frozen=True)
class ParallelConfig:
    tp_size: int = 1
    tp_rank: int = 0

    def __post_init__(self) -> None:
        if self.tp_size < 1 or not 0 <= self.tp_rank < self.tp_size:
            raise KilnError(
                f"tensor parallel rank {self.tp_rank} of size {self.tp_size} is invalid; "
                "need tp_size >= 1 and 0 <= rank < tp_size"
            )


def _shard(n: int, tp: int, what: str) -> int:
    if n % tp:
        raise KilnError(f"{what}={n} is not divisible by tensor-parallel size {tp}")
    return n // tp


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, par: ParallelConfig):
        super().__init__()
        self.num_heads = _shard(cfg.num_heads, par.tp_size, "num_attention_heads")
        self.num_kv_heads = _shard(cfg.num_kv_heads, par.tp_size, "num_key_value_heads")
        self.head_dim, self.eps = cfg.head_dim, cfg.rms_norm_eps
        self.q_size, self.kv_size = self.num_heads * cfg.head_dim, self.num_kv_heads * cfg.head_dim
        self.scale = cfg.head_dim**-0.5
        self.sliding_window = cfg.sliding_windows[layer]
        self.tp_size = par.tp_size
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, cfg.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = nn.Parameter(torch.ones(cfg.head_dim))
            self.k_norm = nn.Parameter(torch.ones(cfg.head_dim))
        else:
            self.q_norm = self.k_norm = None

    def forward(self, positions, x, attn: AttnMetadata, kv_cache, cos_sin) -> torch.Tensor:
        t = x.shape[0]
        qkv = self.qkv_proj(x)  # [T, (Hq + 2 Hk) D]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.reshape(t, self.num_heads, self.head_dim)
        k = k.reshape(t, self.num_kv_heads, self.head_dim)
        v = v.reshape(t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q = kiln.rms_norm(q, self.q_norm, self.eps)
            k = kiln.rms_norm(k, self.k_norm, self.eps)
        q, k = kiln.rotary_embedding(positions, q, k, cos_sin, True)
        k_cache, v_cache = kv_cache
        o = kiln.attention(
            q,
            k,
            v,
            k_cache,
            v_cache,
            attn.slot_mapping,
            attn.block_tables,
            attn.seq_lens,
            attn.query_start_loc,
            self.scale,
            self.sliding_window,
        )  # [T, Hq, D]
        out = self.o_proj(o.reshape(t, self.q_size))
        return kiln.all_reduce(out, self.tp_size) if self.tp_size > 1 else out


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, par: ParallelConfig):
        super().__init__()
        inter = _shard(cfg.intermediate_size, par.tp_size, "intermediate_size")
        self.tp_size = par.tp_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * inter, bias=False)
        self.down_proj = nn.Linear(inter, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.down_proj(kiln.silu_and_mul(self.gate_up_proj(x)))
        return kiln.all_reduce(out, self.tp_size) if self.tp_size > 1 else out


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, par: ParallelConfig):
        super().__init__()
        self.eps = cfg.rms_norm_eps
        self.input_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.self_attn = Attention(cfg, layer, par)
        self.post_attention_layernorm = nn.Parameter(torch.ones(cfg.hidden_size))
        self.mlp = MLP(cfg, par)

    def forward(self, positions, h, residual, attn, kv_cache, cos_sin):
        residual = h if residual is None else h + residual
        h = kiln.rms_norm(residual, self.input_layernorm, self.eps)
        h = self.self_attn(positions, h, attn, kv_cache, cos_sin)
        residual = h + residual
        h = kiln.rms_norm(residual, self.post_attention_layernorm, self.eps)
        return self.mlp(h), residual


class DecoderForCausalLM(nn.Module):
    """forward(input_ids[T], positions[T], attn, kv_caches) -> hidden[T, H]."""

    def __init__(self, cfg: ModelConfig, par: ParallelConfig | None = None):
        super().__init__()
        par = par or ParallelConfig()
        self.cfg, self.par = cfg, par
        self.embed_tokens = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, par) for i in range(cfg.num_layers))
        self.norm = nn.Parameter(torch.ones(cfg.hidden_size))
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        with torch.device("cpu"):  # real values even when the module is built on meta
            table = cos_sin_cache(cfg)
        self.register_buffer("cos_sin_cache", table, persistent=False)

    def forward(self, input_ids, positions, attn: AttnMetadata, kv_caches) -> torch.Tensor:
        h = F.embedding(input_ids, self.embed_tokens)  # [T, H]
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches):
            h, residual = layer(positions, h, residual, attn, kv_cache, self.cos_sin_cache)
        return kiln.rms_norm(h + residual, self.norm, self.cfg.rms_norm_eps)

    def lm_head_weight(self) -> torch.Tensor:
        return self.embed_tokens if self.cfg.tie_word_embeddings else self.lm_head

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> logits [N, V] in fp32."""
        return F.linear(hidden, self.lm_head_weight()).float()
