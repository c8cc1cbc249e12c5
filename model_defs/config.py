"""`ModelConfig`: the parts of a HF `config.json` that shape a Kiln decoder."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import KilnError


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope_theta: float
    rope_scaling: tuple[tuple[str, object], ...] = ()  # sorted (key, value) pairs; () = none
    partial_rotary_factor: float = 1.0
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_windows: tuple[int, ...] = ()  # per layer; 0 = full attention
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            if getattr(self, name) <= 0:
                raise KilnError(f"config field {name}={getattr(self, name)} must be positive")
        if self.num_heads % self.num_kv_heads:
            raise KilnError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        if len(self.sliding_windows) != self.num_layers:
            object.__setattr__(self, "sliding_windows", (0,) * self.num_layers)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def rope_scaling_dict(self) -> dict:
        return dict(self.rope_scaling)


def parse_hf_config(
    raw: dict, *, qkv_bias: bool | None = None, qk_norm: bool = False
) -> ModelConfig:
    """Build a `ModelConfig` from a HF config dict (transformers 4.x and 5.x spellings)."""
    if raw.get("hidden_act", "silu") not in ("silu", "swish"):
        raise KilnError(f"hidden_act={raw['hidden_act']!r} is not supported; Kiln supports silu")
    try:
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        theta = float(rope.pop("rope_theta", raw.get("rope_theta", 10000.0)))
        rope["rope_type"] = rope.pop("rope_type", rope.pop("type", "default"))
        if rope["rope_type"] == "default":
            rope = {}
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        layers = int(raw["num_hidden_layers"])
        return ModelConfig(
            architecture=raw["architectures"][0],
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rope_theta=theta,
            rope_scaling=tuple(sorted(rope.items())),
            partial_rotary_factor=float(raw.get("partial_rotary_factor", 1.0)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=bool(raw.get("attention_bias", False)) if qkv_bias is None else qkv_bias,
            qk_norm=qk_norm,
            sliding_windows=_sliding_windows(raw, layers),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )
    except KeyError as e:
        raise KilnError(f"config.json lacks the required field {e.args[0]!r}") from None


def _sliding_windows(raw: dict, layers: int) -> tuple[int, ...]:
    window = raw.get("sliding_window")
    if not window or raw.get("use_sliding_window") is False:
        return (0,) * layers
    types = raw.get("layer_types")
    if types:
        return tuple(int(window) if t == "sliding_attention" else 0 for t in types)
    return (int(window),) * layers
