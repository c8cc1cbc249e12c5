"""Where every checkpoint tensor goes, worked out without torch, so a start can begin reading
weights before torch is imported (`runtime/weight_stream.py`).

The model's parameters are laid out back to back in one *arena*, each in the checkpoint's
dtype (the engine views them when it runs in that dtype and converts them otherwise). Each
checkpoint tensor becomes one copy from a byte range of its file to a byte range of the arena:
the parts of a fused parameter (q/k/v of `qkv_proj`, gate/up of `gate_up_proj`) are row
ranges, hence contiguous bytes. Only one rank (no tensor-parallel shards) is planned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError
from model_defs.checkpoint_files import (
    DTYPE_SIZES,
    WEIGHT_DTYPES,
    TensorEntry,
    read_header,
    safetensors_files,
)
from model_defs.config import ModelConfig
from model_defs.family import ModelFamily

ALIGN = 512  # every parameter starts on this boundary, as torch's CUDA allocator gives


class PlanUnsupported(Exception):
    """A valid checkpoint whose layout the arena cannot hold (the plain loader reads it)."""


@dataclass(frozen=True)
class ParamSlot:
    name: str
    shape: tuple[int, ...]
    dtype: str  # the checkpoint's (safetensors name), shared by every part of the parameter
    offset: int  # in the arena, a multiple of ALIGN
    nbytes: int


@dataclass(frozen=True)
class CopyRange:
    file: int  # index into WeightPlan.files
    file_offset: int
    nbytes: int
    arena_offset: int


@dataclass(frozen=True)
class WeightPlan:
    path: Path
    files: tuple[Path, ...]
    params: tuple[ParamSlot, ...]  # in module order
    copies: tuple[CopyRange, ...]  # in file order
    arena_bytes: int

    @property
    def data_bytes(self) -> int:
        return sum(c.nbytes for c in self.copies)


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of `DecoderForCausalLM(cfg)` (one rank) and its shape, in the order
    `named_parameters()` lists them (tests/model_defs/test_weight_plan.py checks both)."""
    h, d, inter = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * d
    shapes = {"embed_tokens": (cfg.vocab_size, h), "norm": (h,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head"] = (cfg.vocab_size, h)
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        shapes[p + "input_layernorm"] = (h,)
        shapes[p + "post_attention_layernorm"] = (h,)
        if cfg.qk_norm:
            shapes[p + "self_attn.q_norm"] = (d,)
            shapes[p + "self_attn.k_norm"] = (d,)
        shapes[p + "self_attn.qkv_proj.weight"] = (qkv, h)
        if cfg.qkv_bias:
            shapes[p + "self_attn.qkv_proj.bias"] = (qkv,)
        shapes[p + "self_attn.o_proj.weight"] = (h, cfg.num_heads * d)
        shapes[p + "mlp.gate_up_proj.weight"] = (2 * inter, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inter)
    return shapes


def expected_slices(param_names) -> set[tuple[str, str | None]]:
    """(parameter, part) pairs a checkpoint must fill: the q/k/v and gate/up parts of fused
    parameters, the row-parallel ones as "row", the rest whole (None)."""
    out = set()
    for name in param_names:
        if name.endswith(("qkv_proj.weight", "qkv_proj.bias")):
            out |= {(name, s) for s in ("q", "k", "v")}
        elif name.endswith("gate_up_proj.weight"):
            out |= {(name, "gate"), (name, "up")}
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            out.add((name, "row"))
        else:
            out.add((name, None))
    return out


def map_weight(
    family: ModelFamily, hf_name: str, cfg: ModelConfig
) -> tuple[str, str | None] | None:
    """HF name -> (parameter, part); None for what Kiln ignores (a tied head, rotary buffers)."""
    try:
        target = family.map_weight(hf_name)
    except KeyError:
        raise KilnError(f"unexpected weight {hf_name!r} for the {family.name} family") from None
    if target and target[0] == "lm_head" and cfg.tie_word_embeddings:
        return None  # tied: the embedding is the head
    return target


def missing_error(path: Path, missing: set[tuple[str, str | None]]) -> KilnError:
    names = sorted(f"{n}[{s}]" if s else n for n, s in missing)
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return KilnError(f"checkpoint {path} lacks weights for: {', '.join(names[:8])}{more}")


def part_rows(shard: str | None, cfg: ModelConfig, rows: int) -> tuple[int, int]:
    """(first row, row count) of a part of a parameter with `rows` rows (one rank)."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    parts = {"q": (0, q), "k": (q, kv), "v": (q + kv, kv), "gate": (0, rows // 2),
             "up": (rows // 2, rows // 2)}  # fmt: skip
    return parts.get(shard, (0, rows))


def plan_weights(path: Path, family: ModelFamily, cfg: ModelConfig) -> WeightPlan:
    """The arena layout and copy list of checkpoint `path`, every tensor checked (name, dtype,
    shape, byte range) before anything is read."""
    files = tuple(safetensors_files(path))
    shapes = parameter_shapes(cfg)
    found: dict[tuple[str, str | None], tuple[int, TensorEntry]] = {}
    for index, file in enumerate(files):
        for entry in read_header(file):
            target = map_weight(family, entry.name, cfg)
            if target is None:
                continue
            found[_check(file, entry, target, shapes, cfg, found)] = (index, entry)
    missing = expected_slices(shapes) - set(found)
    if missing:
        raise missing_error(path, missing)
    slots = _layout(shapes, found)
    copies = []
    for (name, shard), (index, entry) in found.items():
        slot = slots[name]
        first, _rows = part_rows(shard, cfg, slot.shape[0])
        row_bytes = math.prod(slot.shape[1:]) * DTYPE_SIZES[slot.dtype]
        copies.append(CopyRange(index, entry.offset, entry.nbytes, slot.offset + first * row_bytes))
    copies.sort(key=lambda c: (c.file, c.file_offset))
    end = max((s.offset + s.nbytes for s in slots.values()), default=0)
    return WeightPlan(path, files, tuple(slots.values()), tuple(copies), end)


def _check(file: Path, entry: TensorEntry, target, shapes: dict, cfg: ModelConfig, found) -> tuple:
    name, shard = target
    if name not in shapes:
        raise KilnError(f"{file.name}: {entry.name} maps to {name}, which this config lacks")
    if entry.dtype not in WEIGHT_DTYPES:
        raise KilnError(
            f"{file.name}: {entry.name} has dtype {entry.dtype}; weights must be floating "
            f"point ({', '.join(WEIGHT_DTYPES)})"
        )
    _, rows = part_rows(shard, cfg, shapes[name][0])
    want = (rows, *shapes[name][1:])
    if entry.shape != want:
        raise KilnError(
            f"shape mismatch for {entry.name}: checkpoint has {entry.shape}, the config "
            f"implies {want}"
        )
    if (name, shard) in found:
        raise KilnError(f"checkpoint {file.parent} holds {entry.name} twice ({file.name})")
    return name, shard


def _layout(shapes: dict, found: dict) -> dict[str, ParamSlot]:
    dtypes: dict[str, set[str]] = {}
    for (name, _), (_, entry) in found.items():
        dtypes.setdefault(name, set()).add(entry.dtype)
    slots, offset = {}, 0
    for name, shape in shapes.items():
        if len(dtypes[name]) != 1:
            raise PlanUnsupported(
                f"the parts of {name} have different dtypes {sorted(dtypes[name])}"
            )
        (dtype,) = dtypes[name]
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        slots[name] = ParamSlot(name, shape, dtype, offset, nbytes)
        offset = -(-(offset + nbytes) // ALIGN) * ALIGN
    return slots
