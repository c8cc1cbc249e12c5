"""A step's inputs as the model reads them: every field against a per-token spelling of its
definition, on random batches of decodes, prompt chunks and both, exact and padded."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from model_defs import step_inputs
from model_defs.step_inputs import StepLayout, StepSeq, prepare_inputs, write_step

BLOCK = 4


def random_batch(rng: random.Random, n: int, decode_only: bool) -> list[StepSeq]:
    batch, next_block = [], 0
    for _ in range(n):
        start = rng.randrange(0, 40)
        count = 1 if decode_only else rng.choice([1, rng.randrange(1, 13)])
        blocks = -(-(start + count) // BLOCK) + rng.randrange(0, 3)  # some spare blocks
        table = [next_block + 7 * j for j in range(blocks)]
        next_block += 1
        ids = [rng.randrange(0, 1000) for _ in range(count)]
        batch.append(StepSeq(ids, start, table, rng.random() < 0.7))
    return batch


def by_definition(batch: list[StepSeq]) -> dict[str, list]:
    """Each field token by token, straight from the docstrings of AttnMetadata and StepInputs."""
    ids, pos, slots, seq_lens, qsl, logits = [], [], [], [], [0], []
    for s in batch:
        for k, token in enumerate(s.token_ids):
            p = s.start + k
            ids.append(token)
            pos.append(p)
            slots.append(s.block_table[p // BLOCK] * BLOCK + p % BLOCK)
        seq_lens.append(s.start + len(s.token_ids))
        qsl.append(qsl[-1] + len(s.token_ids))
        if s.needs_logits:
            logits.append(qsl[-1] - 1)
    width = max(len(s.block_table) for s in batch)
    tables = [list(s.block_table) + [0] * (width - len(s.block_table)) for s in batch]
    return dict(input_ids=ids, positions=pos, slot_mapping=slots, seq_lens=seq_lens,
                query_start_loc=qsl, logits_indices=logits, block_tables=tables)  # fmt: skip


@pytest.fixture(params=["python", "numpy"])
def decode_writer(request, monkeypatch):
    """Small decode batches have a plain-Python writer; run every case through both."""
    monkeypatch.setattr(step_inputs, "SMALL_DECODE", 10**6 if request.param == "python" else 0)
    return request.param


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decode_only", [True, False])
def test_prepare_inputs_matches_the_definition(seed, decode_only, decode_writer):
    rng = random.Random(seed)
    batch = random_batch(
        rng, rng.choice([rng.randrange(1, 9), rng.randrange(60, 140)]), decode_only
    )
    want = by_definition(batch)
    inp = prepare_inputs(batch, BLOCK, "cpu")
    got = dict(input_ids=inp.input_ids, positions=inp.positions,
               slot_mapping=inp.attn.slot_mapping, seq_lens=inp.attn.seq_lens,
               query_start_loc=inp.attn.query_start_loc, logits_indices=inp.logits_indices,
               block_tables=inp.attn.block_tables)  # fmt: skip
    for name, value in want.items():
        assert got[name].tolist() == value, name
    assert inp.input_ids.dtype == inp.positions.dtype == inp.attn.slot_mapping.dtype == torch.int64
    assert inp.attn.block_tables.dtype == inp.attn.seq_lens.dtype == torch.int32


@pytest.mark.parametrize("decode_only", [True, False])
def test_padded_layout_pads_every_field_harmlessly(decode_only, decode_writer):
    rng = random.Random(7)
    batch = random_batch(rng, 3, decode_only)
    want = by_definition(batch)
    t, n, m = len(want["input_ids"]), len(batch), len(want["logits_indices"])
    layout = StepLayout(tokens=t + 5, seqs=n + 2, logits=n + 2, table_rows=n + 1, table_cols=12)
    buf = np.full(layout.nbytes, 0xAB, dtype=np.uint8)  # garbage everywhere first
    write_step(batch, BLOCK, layout, buf)
    v = {k: x.tolist() for k, x in layout.split(torch.from_numpy(buf)).items()}
    assert v["input_ids"] == want["input_ids"] + [0] * 5
    assert v["positions"] == want["positions"] + [0] * 5
    assert v["slot_mapping"] == want["slot_mapping"] + [-1] * 5  # no KV write
    assert v["seq_lens"] == want["seq_lens"] + [0, 0]
    assert v["query_start_loc"] == want["query_start_loc"] + [t, t]  # own no query rows
    assert v["logits_indices"] == want["logits_indices"] + [0] * (n + 2 - m)
    for row, table in zip(v["block_tables"], want["block_tables"] + [[]], strict=True):
        assert row == table + [0] * (12 - len(table))


@pytest.mark.parametrize("tokens", [[1, 2, 3], [1]])
def test_a_step_that_does_not_fit_its_layout_is_refused(tokens, decode_writer):
    batch = [StepSeq(tokens, 0, [0], True), StepSeq(tokens, 0, [1], True)]
    t = 2 * len(tokens)
    with pytest.raises(ValueError, match="does not fit"):
        write_step(batch, BLOCK, StepLayout(t - 1, 2, 2, 2, 1), np.zeros(1024, np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        write_step(batch, BLOCK, StepLayout(t, 2, 1, 2, 1), np.zeros(1024, np.uint8))
    with pytest.raises(ValueError, match="block table of 1 blocks does not fit"):
        write_step(batch, BLOCK, StepLayout(t, 2, 2, 2, 0), np.zeros(1024, np.uint8))


def test_every_field_starts_on_a_16_byte_boundary():
    for t, s, m, rows, cols in [(1, 1, 1, 1, 3), (3, 2, 1, 2, 5), (7, 5, 5, 5, 1), (0, 0, 0, 0, 0)]:
        layout = StepLayout(t, s, m, rows, cols)
        for name, _, offset, _ in layout.fields():
            assert offset % 16 == 0, (name, offset, layout)
        v = layout.split(torch.zeros(layout.nbytes, dtype=torch.uint8))
        assert v["block_tables"].shape == (rows, cols) and v["logits_indices"].shape == (m,)


def test_a_sequence_with_no_tokens_is_not_read_as_a_decode():
    # t == n here although no sequence runs exactly one token
    batch = [StepSeq([], 3, [3], False), StepSeq([8, 9], 3, [1, 2], True)]
    inp = prepare_inputs(batch, BLOCK, "cpu")
    assert inp.positions.tolist() == [3, 4] and inp.attn.slot_mapping.tolist() == [7, 8]


@pytest.mark.parametrize("tokens", [[1, 2], [1]])
def test_a_block_table_too_short_for_the_positions_is_refused(tokens, decode_writer):
    with pytest.raises(ValueError, match="holds 1 blocks of 4"):
        prepare_inputs([StepSeq(tokens, 4, [0], True)], BLOCK, "cpu")
