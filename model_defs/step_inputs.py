"""One scheduled step as model inputs: token ids, positions and paged-attention metadata.

The runner builds these for every step; the pass checks build them to run a graph on a
realistic step. They belong to the model's calling convention, not to either caller.

A step's inputs live in one byte buffer (`StepLayout`): the host writes every field into it
with a few vectorised numpy operations (`write_step`) and the device gets it in one copy, so a
step costs the same handful of host operations at batch 1 and at batch 256.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model_defs.attn_metadata import AttnMetadata


@dataclass(frozen=True)
class StepSeq:
    """One sequence's share of a step: run `token_ids` at positions start.., sample if asked."""

    token_ids: Sequence[int]
    start: int
    block_table: Sequence[int]
    needs_logits: bool


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    attn: AttnMetadata
    logits_indices: torch.Tensor  # [N] rows of hidden whose logits are needed


SMALL_DECODE = 64  # decode batches up to this many sequences are written in plain Python
ALIGN = 16  # every field starts on a 16-byte boundary, as a tensor of its own would


@dataclass(frozen=True)
class StepLayout:
    """Where each input of a step sits in one byte buffer, in order: int64 input_ids,
    positions and slot_mapping [tokens] and logits_indices [logits]; int32 seq_lens [seqs],
    query_start_loc [seqs + 1] and block_tables [table_rows, table_cols], last.

    Each field starts at a multiple of `ALIGN` bytes: kernels compiled for aligned inputs
    (Inductor and Triton specialise on 16-byte alignment) take views of it as they are.
    `tokens`, `seqs` and `logits` may exceed the step's own counts: `write_step` pads the
    extra rows (a CUDA graph's bucket). The block table comes last so that a runner can keep
    its own wider table and take the step's rows from the tail."""

    tokens: int
    seqs: int
    logits: int
    table_rows: int
    table_cols: int

    def __post_init__(self) -> None:
        t, s = self.tokens, self.seqs
        specs = [
            ("input_ids", torch.int64, (t,)),
            ("positions", torch.int64, (t,)),
            ("slot_mapping", torch.int64, (t,)),
            ("logits_indices", torch.int64, (self.logits,)),
            ("seq_lens", torch.int32, (s,)),
            ("query_start_loc", torch.int32, (s + 1,)),
            ("block_tables", torch.int32, (self.table_rows, self.table_cols)),
        ]
        fields, offset = {}, 0
        for name, dtype, shape in specs:
            offset = -(-offset // ALIGN) * ALIGN
            fields[name] = (dtype, offset, shape)
            offset += dtype.itemsize * math.prod(shape)
        object.__setattr__(self, "_fields", fields)  # name -> (dtype, byte offset, shape)
        object.__setattr__(self, "_nbytes", offset)

    def fields(self) -> list[tuple[str, torch.dtype, int, tuple[int, ...]]]:
        """(name, dtype, byte offset, shape) of every field, in buffer order."""
        return [(name, *spec) for name, spec in self._fields.items()]

    @property
    def table_offset(self) -> int:
        return self._fields["block_tables"][1]

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def _views(self, buf, int64, int32, reshape) -> dict:
        """Every field as a view of `buf` (torch or numpy, uint8): one typed view per dtype's
        region, then a slice per field."""
        start = self._fields["seq_lens"][1]  # the int32 region's
        wide, narrow = int64(buf[:start]), int32(buf[start : self._nbytes])
        views = {}
        for name, (dtype, offset, shape) in self._fields.items():
            if dtype == torch.int64:
                at = offset // 8
                views[name] = wide[at : at + shape[0]]
            else:
                at, size = (offset - start) // 4, math.prod(shape)
                views[name] = narrow[at : at + size]
        views["block_tables"] = reshape(views["block_tables"], self.table_rows, self.table_cols)
        return views

    def split(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of every field of a uint8 tensor (host or device) laid out as this."""
        return self._views(buf, lambda b: b.view(torch.int64), lambda b: b.view(torch.int32),
                           lambda x, r, c: x.view(r, c))  # fmt: skip

    def arrays(self, out: np.ndarray) -> dict[str, np.ndarray]:
        """The same views of a uint8 numpy array, to write a step into."""
        return self._views(out, lambda b: b.view(np.int64), lambda b: b.view(np.int32),
                           lambda x, r, c: x.reshape(r, c))  # fmt: skip

    def inputs(self, buf: torch.Tensor) -> StepInputs:
        return _as_inputs(self.split(buf))


def _as_inputs(v: dict[str, torch.Tensor]) -> StepInputs:
    attn = AttnMetadata(v["slot_mapping"], v["block_tables"], v["seq_lens"],
                        v["query_start_loc"])  # fmt: skip
    return StepInputs(v["input_ids"], v["positions"], attn, v["logits_indices"])


def step_counts(batch: Sequence[StepSeq]) -> tuple[int, int, int]:
    """(tokens, sequences with logits, the longest block table) of a step."""
    tokens = sum(len(s.token_ids) for s in batch)
    widest = max((len(s.block_table) for s in batch), default=0)
    return tokens, sum(1 for s in batch if s.needs_logits), widest


def write_step(batch: Sequence[StepSeq], block_size: int, layout: StepLayout,
               out: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """Write a step into `out` (uint8, `layout.nbytes`), padding the rows past its own:
    padding tokens get id 0, position 0 and slot -1 (no KV write); padding sequences get
    seq_len 0 and the last real query offset (they own no query rows); padding logits rows
    point at row 0. Block table rows hold each sequence's blocks, then zeros. A step that
    does not fit the layout is refused (ValueError). Returns the fields' numpy views."""
    n = len(batch)
    if 0 < n <= SMALL_DECODE and all(len(s.token_ids) == 1 for s in batch):
        return _write_small_decode(batch, block_size, layout, out)
    lens = np.fromiter((len(s.token_ids) for s in batch), np.int64, n)
    starts = np.fromiter((s.start for s in batch), np.int64, n)
    table_lens = np.fromiter((len(s.block_table) for s in batch), np.int64, n)
    wanted = np.fromiter((s.needs_logits for s in batch), bool, n)
    t, m = int(lens.sum()), int(wanted.sum())
    if t > layout.tokens or n > layout.seqs or n > layout.table_rows or m > layout.logits:
        raise ValueError(f"a step of {t} tokens, {n} sequences and {m} logits rows does not "
                         f"fit {layout}")  # fmt: skip
    if n and int(table_lens.max()) > layout.table_cols:
        raise ValueError(f"a block table of {table_lens.max()} blocks does not fit {layout}")
    short = (lens > 0) & ((starts + lens - 1) // block_size >= table_lens)
    if short.any():
        i = int(short.argmax())
        raise ValueError(f"sequence {i} of the step runs positions up to "
                         f"{starts[i] + lens[i] - 1} but its block table holds "
                         f"{table_lens[i]} blocks of {block_size}")  # fmt: skip
    out.fill(0)  # every padding value but two is 0
    v = layout.arrays(out)
    qsl, slots = v["query_start_loc"], v["slot_mapping"]
    slots[t:] = -1
    if n == 0:
        return v
    np.cumsum(lens, out=qsl[1 : n + 1])
    qsl[n + 1 :] = t
    v["seq_lens"][:n] = starts + lens
    table = v["block_tables"]
    flat = np.fromiter(itertools.chain.from_iterable(s.block_table for s in batch), np.int32,
                       int(table_lens.sum()))  # fmt: skip
    table[:n][np.arange(layout.table_cols) < table_lens[:, None]] = flat
    v["input_ids"][:t] = np.fromiter(itertools.chain.from_iterable(s.token_ids for s in batch),
                                     np.int64, t)  # fmt: skip
    if t == n and (lens == 1).all():  # every sequence runs one token: a decode batch
        pos, rows = starts, np.arange(n)
    else:
        rows = np.repeat(np.arange(n), lens)
        pos = np.arange(t) + np.repeat(starts - qsl[:n], lens)
    v["positions"][:t] = pos
    slots[:t] = table[rows, pos // block_size].astype(np.int64) * block_size + pos % block_size
    v["logits_indices"][:m] = qsl[1 : n + 1][wanted] - 1
    return v


def _write_small_decode(batch: Sequence[StepSeq], block_size: int, layout: StepLayout,
                        out: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """`write_step` of a few sequences running one token each, in plain Python: a handful of
    list assignments cost less than the vectorised path's fixed ~50 numpy calls."""
    n = len(batch)
    wanted = [i for i, s in enumerate(batch) if s.needs_logits]
    widest = max(len(s.block_table) for s in batch)
    if n > layout.tokens or n > layout.seqs or n > layout.table_rows or len(wanted) > layout.logits:
        raise ValueError(f"a step of {n} tokens, {n} sequences and {len(wanted)} logits rows "
                         f"does not fit {layout}")  # fmt: skip
    if widest > layout.table_cols:
        raise ValueError(f"a block table of {widest} blocks does not fit {layout}")
    slots = []
    for i, s in enumerate(batch):
        block = s.start // block_size
        if block >= len(s.block_table):
            raise ValueError(f"sequence {i} of the step runs positions up to {s.start} but its "
                             f"block table holds {len(s.block_table)} blocks of {block_size}")  # fmt: skip
        slots.append(s.block_table[block] * block_size + s.start % block_size)
    out.fill(0)
    v = layout.arrays(out)
    v["input_ids"][:n] = [s.token_ids[0] for s in batch]
    v["positions"][:n] = [s.start for s in batch]
    v["slot_mapping"][:n] = slots
    v["slot_mapping"][n:] = -1
    v["seq_lens"][:n] = [s.start + 1 for s in batch]
    qsl = v["query_start_loc"]
    qsl[: n + 1] = range(n + 1)
    qsl[n + 1 :] = n
    v["logits_indices"][: len(wanted)] = wanted
    table = v["block_tables"]
    for i, s in enumerate(batch):
        table[i, : len(s.block_table)] = s.block_table
    return v


def host_buffer(nbytes: int, device: torch.device) -> torch.Tensor:
    """A uint8 host tensor for one step: pinned when it goes to a GPU, so its copy is
    asynchronous (PyTorch's pinned allocator keeps it until that copy has run)."""
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=device.type == "cuda")


def prepare_inputs(batch: Sequence[StepSeq], block_size: int, device) -> StepInputs:
    """The step's inputs on `device`, exactly sized (one host-to-device copy)."""
    device = torch.device(device)
    t, m, blocks = step_counts(batch)
    layout = StepLayout(t, len(batch), m, len(batch), blocks)
    host = host_buffer(layout.nbytes, device)
    arrays = write_step(batch, block_size, layout, host.numpy())
    if device.type == "cpu":  # the numpy views as tensors: cheaper than slicing the tensor
        return _as_inputs({name: torch.from_numpy(a) for name, a in arrays.items()})
    return layout.inputs(host.to(device, non_blocking=True))
