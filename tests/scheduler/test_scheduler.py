"""Scheduler rules, one test each: chunking, decodes, admission, prefix hits, preemption."""

from __future__ import annotations

import random

import pytest
from scheduler_sim import FakeRunner, check_blocks, step

from kiln.errors import KilnError
from scheduler import Scheduler, SchedulerConfig, Sequence, SequenceStatus


def make(**overrides) -> tuple[Scheduler, FakeRunner]:
    cfg = dict(
        max_num_seqs=8,
        max_num_batched_tokens=64,
        block_size=4,
        num_blocks=64,
        max_model_len=256,
        enable_prefix_caching=True,
    )
    cfg.update(overrides)
    cfg.setdefault("max_prefill_while_decoding", cfg["max_num_batched_tokens"])  # no bound
    return Scheduler(SchedulerConfig(**cfg)), FakeRunner(cfg["block_size"])


def toks(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, 500) for _ in range(n)]


def seq(seq_id: str, n: int, max_tokens: int = 8, seed: int | None = None, **kw) -> Sequence:
    return Sequence(
        seq_id, toks(n, seed if seed is not None else hash(seq_id) % 1000), max_tokens, **kw
    )


def plan(out) -> dict[str, tuple[int, int]]:
    return {s.seq.seq_id: (s.start, s.num_new_tokens) for s in out.scheduled}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(max_num_seqs=0), "max_num_seqs"),
        (dict(block_size=0), "block_size"),
        (dict(max_num_batched_tokens=4), "max_num_batched_tokens"),
        (dict(max_prefill_while_decoding=0), "max_prefill_while_decoding"),
        (dict(max_model_len=257), "max_model_len"),
        (dict(max_preemptions=-1), "max_preemptions"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"SchedulerConfig.{field} "):
        make(**overrides)


def test_add_rejects_duplicate_ids_and_requests_longer_than_the_model():
    sched, _ = make(max_model_len=32)
    sched.add(seq("a", 10))
    with pytest.raises(KilnError, match="already running"):
        sched.add(seq("a", 3))
    with pytest.raises(KilnError, match="exceed the model's max length 32"):
        sched.add(seq("b", 30, max_tokens=3))
    assert sched.num_waiting == 1


def test_prefill_then_one_token_per_decode():
    sched, runner = make()
    sched.add(seq("a", 10))
    sched.add(seq("b", 6))
    out = step(sched, runner)
    assert plan(out) == {"a": (0, 10), "b": (0, 6)}
    assert out.num_batched_tokens == 16
    assert all(s.needs_sample for s in out.scheduled)  # still true of this step after update
    assert [len(s.output_token_ids) for s in sched.running] == [1, 1]
    out = step(sched, runner)
    assert plan(out) == {"a": (10, 1), "b": (6, 1)}


def test_long_prompt_is_chunked_and_sampled_only_after_its_last_chunk():
    sched, _ = make(max_num_batched_tokens=16)
    sched.add(seq("a", 40))
    for start, n in [(0, 16), (16, 16)]:
        out = sched.schedule()
        assert plan(out) == {"a": (start, n)} and not out.scheduled[0].needs_sample
        assert sched.update(out, {"a": 123}) == []  # a mid-prompt sample is ignored
    out = sched.schedule()
    assert plan(out) == {"a": (32, 8)} and out.scheduled[0].needs_sample
    (a,) = sched.update(out, {"a": 77})
    assert a.output_token_ids == [77] and a.num_computed_tokens == 40


def test_update_requires_a_sample_for_every_sequence_that_reached_its_end():
    sched, _ = make()
    sched.add(seq("a", 5))
    out = sched.schedule()
    with pytest.raises(KeyError, match="no sampled token for a"):
        sched.update(out, {})


def test_blocks_cover_every_scheduled_position():
    sched, _ = make(max_num_batched_tokens=16)
    sched.add(seq("a", 37))
    sched.add(seq("b", 3))
    for _ in range(4):
        out = sched.schedule()
        for item in out.scheduled:
            assert len(item.seq.block_table) * 4 >= item.start + item.num_new_tokens
        sched.update(out, {s.seq.seq_id: 9 for s in out.scheduled if s.needs_sample})


def test_waiting_admitted_in_order_within_seats_and_budget():
    sched, runner = make(max_num_seqs=2, max_num_batched_tokens=16)
    for name, n in [("a", 10), ("b", 10), ("c", 2)]:
        sched.add(seq(name, n))
    out = step(sched, runner)
    assert plan(out) == {"a": (0, 10), "b": (0, 6)}  # b gets the budget left; c has no seat
    assert (sched.num_running, sched.num_waiting) == (2, 1)


def test_front_of_queue_blocks_later_requests_when_it_lacks_blocks():
    sched, runner = make(num_blocks=8, max_model_len=32, max_num_batched_tokens=64)
    sched.add(seq("a", 20, max_tokens=4))  # 5 blocks
    sched.add(seq("b", 16, max_tokens=4))  # 4 blocks: does not fit yet
    sched.add(seq("c", 2, max_tokens=4))  # would fit, but FCFS keeps it behind b
    out = step(sched, runner)
    assert set(plan(out)) == {"a"} and [s.seq_id for s in sched.waiting] == ["b", "c"]


def test_prefix_hit_starts_computation_at_the_cached_length():
    sched, runner = make()
    shared = toks(12, seed=42)
    sched.add(Sequence("a", shared, max_tokens=1))
    step(sched, runner)  # a is done after one step
    assert not sched.has_unfinished() and sched.schedule().is_empty
    sched.add(Sequence("b", shared + [7, 8], max_tokens=2))
    sched.add(Sequence("c", shared, max_tokens=2))  # fully cached: its last block is rerun
    out = step(sched, runner)
    assert plan(out) == {"b": (12, 2), "c": (8, 4)}
    b, c = sched.seqs["b"], sched.seqs["c"]
    assert (b.num_cached_tokens, c.num_cached_tokens) == (12, 8)
    assert b.block_table[:2] == c.block_table[:2]
    bm = sched.block_manager
    assert bm.num_prefix_hits == 20 and bm.prefix_hit_rate == pytest.approx(20 / (12 + 14 + 12))


def test_preemption_frees_the_newest_and_requeues_it_at_the_front():
    sched, runner = make(num_blocks=6, max_model_len=24, max_num_batched_tokens=32)
    for name in "abc":
        sched.add(seq(name, 7, max_tokens=12))  # 2 blocks each: the pool is full
    step(sched, runner)
    step(sched, runner)
    sched.add(seq("d", 2))
    out = step(sched, runner)  # a needs a 3rd block at position 8
    c = sched.seqs["c"]
    assert out.preempted == ["c"] and set(plan(out)) == {"a", "b"}
    assert "d" not in plan(out)  # nothing is admitted in a step that preempted
    assert [s.seq_id for s in sched.waiting] == ["c", "d"]
    assert c.status is SequenceStatus.WAITING and c.block_table == []
    assert (c.num_computed_tokens, c.num_preemptions) == (0, 1)
    assert len(c.output_token_ids) == 2  # outputs survive; they are recomputed
    check_blocks(sched.block_manager, sched.running)


def test_recompute_runs_prompt_and_outputs_then_samples_the_next_token():
    sched, runner = make(num_blocks=6, max_model_len=24, max_num_batched_tokens=32)
    for name in "abc":
        sched.add(seq(name, 7, max_tokens=12))
    for _ in range(3):
        step(sched, runner)  # c preempted with 2 outputs
    sched.finish("a", "stop")
    sched.finish("b", "stop")
    c = sched.seqs["c"]
    out = step(sched, runner)  # the fake runner checks every slot c reads
    assert plan(out) == {"c": (0, 9)}  # its cached first block was evicted by a and b
    assert len(c.output_token_ids) == 3


def test_often_preempted_sequence_is_spared_while_another_can_go():
    sched, runner = make(num_blocks=6, max_model_len=24, max_num_batched_tokens=32)
    sched.add(seq("a", 7, max_tokens=12))
    sched.add(seq("b", 7, max_tokens=12))
    sched.add(seq("c", 7, max_tokens=12, num_preemptions=3))  # at the limit
    step(sched, runner)
    step(sched, runner)
    out = step(sched, runner)
    assert out.preempted == ["b"]  # newest that is not at the limit
    assert sched.seqs["c"].status is SequenceStatus.RUNNING


def test_when_all_are_at_the_limit_the_newest_still_goes():
    sched, runner = make(num_blocks=6, max_model_len=24, max_num_batched_tokens=32)
    for name in "abc":
        sched.add(seq(name, 7, max_tokens=12, num_preemptions=3))
    step(sched, runner)
    step(sched, runner)
    assert step(sched, runner).preempted == ["c"]


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_sequence_the_whole_cache_cannot_hold_is_rejected_not_looped(prefix_caching):
    sched, runner = make(
        num_blocks=2,
        max_model_len=8,
        max_num_batched_tokens=8,
        enable_prefix_caching=prefix_caching,
    )
    sched.add(seq("a", 4, max_tokens=4))
    for _ in range(10):  # an engine that never stops it: no EOS, no max_tokens check
        out = sched.schedule()
        sched.update(out, runner.execute(out))
        if out.rejected:
            break
    assert "whole cache holds 8" in out.rejected["a"]
    assert sched.block_manager.num_free_blocks == 2 and not sched.has_unfinished()
    assert sched.seqs == {} and out.scheduled == []


def test_waiting_sequence_an_empty_cache_cannot_hold_is_rejected_not_kept():
    sched, _ = make(num_blocks=2, max_model_len=8, max_num_batched_tokens=16)
    a = seq("a", 4, max_tokens=4)
    sched.add(a)
    a.output_token_ids += [5] * 6  # grown past the cache by a misbehaving engine
    sched.add(seq("b", 2, max_tokens=2))
    out = sched.schedule()
    assert list(out.rejected) == ["a"] and a.finish_reason == "length"
    assert plan(out) == {"b": (0, 2)}  # the queue moves on


def test_abort_frees_waiting_and_running_and_ignores_unknown_ids():
    sched, runner = make(max_num_seqs=1)
    sched.add(seq("a", 9))
    sched.add(seq("b", 5))
    out = sched.schedule()
    sampled = runner.execute(out)
    sched.abort("a")
    sched.abort("b")
    sched.abort("nope")
    assert sched.update(out, sampled) == []  # a's result arrives after its abort
    assert not sched.has_unfinished() and sched.block_manager.num_free_blocks == 64
    with pytest.raises(KeyError):
        sched.finish("a", "stop")


def test_long_prompt_never_stalls_running_decodes():
    sched, runner = make(
        max_num_seqs=16,
        max_num_batched_tokens=64,
        block_size=16,
        num_blocks=256,
        max_model_len=2048,
    )
    decoders = [f"d{i}" for i in range(8)]
    for i, name in enumerate(decoders):
        sched.add(seq(name, 5 + 2 * i, max_tokens=200))
    while any(not sched.seqs[name].output_token_ids for name in decoders):
        step(sched, runner)
    sched.add(seq("long", 1000, max_tokens=4))
    chunks = []
    while not sched.seqs["long"].output_token_ids:
        out = step(sched, runner)
        got = plan(out)
        assert all(got[name][1] == 1 for name in decoders)  # every decode, every step
        chunks.append(got["long"][1])
    assert chunks == [56] * 17 + [1000 - 56 * 17]


def test_older_sequence_recomputing_leaves_one_token_per_newer_decode():
    sched, runner = make(
        num_blocks=4,
        max_model_len=16,
        max_num_batched_tokens=4,
        max_num_seqs=4,
        max_preemptions=1,
        enable_prefix_caching=False,
    )
    sched.add(seq("c", 2, max_tokens=2, num_preemptions=1))
    sched.add(seq("a", 4, max_tokens=8))
    sched.add(seq("b", 2, max_tokens=8, num_preemptions=1))  # at the limit: a gives way
    outs = [step(sched, runner) for _ in range(9)]
    assert outs[6].preempted == ["a"] and plan(outs[6]) == {"b": (5, 1)}
    assert plan(outs[7]) == {"a": (0, 3), "b": (6, 1)}
    assert plan(outs[8]) == {"a": (3, 3), "b": (7, 1)}  # a is older, yet b still decodes


def test_prefill_chunk_shrinks_to_the_free_blocks_instead_of_preempting():
    sched, runner = make(num_blocks=8, max_model_len=32, max_num_batched_tokens=8, max_num_seqs=2)
    sched.add(seq("b", 16, max_tokens=8))
    sched.add(seq("a", 14, max_tokens=2))
    outs = [step(sched, runner) for _ in range(4)]
    assert plan(outs[2]) == {"b": (16, 1), "a": (0, 7)}
    assert plan(outs[3]) == {"b": (17, 1), "a": (7, 5)}  # 1 free block: 5 tokens fit, not 7
    assert not any(out.preempted for out in outs)


def test_prefill_while_decoding_gets_its_own_budget_and_full_budget_when_idle():
    sched, runner = make(
        max_num_seqs=8, max_num_batched_tokens=64, max_prefill_while_decoding=16, num_blocks=128
    )
    sched.add(seq("a", 40, max_tokens=50))
    sched.add(seq("b", 40, max_tokens=50))
    first = step(sched, runner)
    assert plan(first) == {"a": (0, 40), "b": (0, 24)}  # nothing decodes yet: the whole budget
    second = step(sched, runner)  # a decodes now: b's rest is bounded by the prefill budget
    assert plan(second) == {"a": (40, 1), "b": (24, 16)}
    sched.add(seq("c", 30, max_tokens=4))
    sched.add(seq("d", 30, max_tokens=4))
    got = [plan(step(sched, runner)) for _ in range(4)]
    assert got[0] == {"a": (41, 1), "b": (40, 1), "c": (0, 16)}  # d waits: budget spent
    assert got[1] == {"a": (42, 1), "b": (41, 1), "c": (16, 14), "d": (0, 2)}
    assert got[2] == {"a": (43, 1), "b": (42, 1), "c": (30, 1), "d": (2, 16)}
    assert got[3] == {"a": (44, 1), "b": (43, 1), "c": (31, 1), "d": (18, 12)}


def test_step_counts_decodes_and_prefill_tokens():
    sched, runner = make(max_num_batched_tokens=64)
    sched.add(seq("a", 10, max_tokens=5))
    out = step(sched, runner)
    assert (out.num_decodes, out.num_prefill_tokens) == (0, 10)
    sched.add(seq("b", 7, max_tokens=5))
    out = step(sched, runner)
    assert (out.num_decodes, out.num_prefill_tokens, out.num_batched_tokens) == (1, 7, 8)


def test_prompts_arriving_faster_than_the_bound_raise_the_prefill_budget():
    from scheduler.scheduler import PREFILL_HEADROOM, PREFILL_RATE_WINDOW

    sched, runner = make(
        max_num_seqs=64, max_num_batched_tokens=256, max_prefill_while_decoding=8,
        num_blocks=4096, max_model_len=512,
    )  # fmt: skip
    sched.add(seq("a", 8, max_tokens=400))
    assert step(sched, runner).prefill_budget == 256  # nothing decodes yet
    budgets = []
    for i in range(PREFILL_RATE_WINDOW):  # one 12-token prompt per step: twice the bound
        sched.add(seq(f"w{i}", 12, max_tokens=400))
        out = step(sched, runner)
        assert out.num_prefill_tokens <= out.prefill_budget
        budgets.append(out.prefill_budget)
    assert budgets[0] == 8  # 2 x 12 x 1/64 tokens a step so far: the bound
    assert budgets[-1] == PREFILL_HEADROOM * 12  # the window is full of arrivals
    assert all(b <= c for b, c in zip(budgets, budgets[1:]))
    # Under the bound alone (8 of 12 tokens a step) about 21 prompts would wait by now.
    assert len(sched.waiting) <= 1
    for _ in range(PREFILL_RATE_WINDOW):  # arrivals stop: back to the bound
        out = step(sched, runner)
    assert out.prefill_budget == 8
