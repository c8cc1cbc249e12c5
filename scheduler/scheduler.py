"""Continuous batching with unified token accounting (vLLM v1 style).

Every step gives each scheduled sequence `num_new_tokens` of its not-yet-computed tokens: a
prefill chunk and a decode are the same thing. Priority is arrival order: running sequences
(oldest first) before waiting ones, and when KV blocks run out the newest running sequence is
preempted by recompute, so the oldest request always makes progress.

Two budgets bound a step: `max_num_batched_tokens` over all its tokens, and, while any
sequence is decoding, `max_prefill_while_decoding` over its prefill tokens (prompt chunks and
recomputes). The second bounds how long a running stream's next token waits on prompts that
arrive after it: a step's cost grows with its tokens, and every decode in it waits for the step.
It spreads a burst of arrivals over several steps. It never holds admissions below what keeps
pace with the load: the budget is at least PREFILL_HEADROOM times the prompt tokens that
arrived per step over the last PREFILL_RATE_WINDOW steps (with many clients every step is a
mixed step anyway, and uniform steps have no latency tail).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from kiln.errors import KilnError
from scheduler.block_manager import BlockManager
from scheduler.sequence import Sequence, SequenceStatus

PREFILL_RATE_WINDOW = 64  # steps over which the arrival rate of prompt tokens is averaged
PREFILL_HEADROOM = 2  # while decoding, prefill up to this many times that rate per step


@dataclass(frozen=True)
class SchedulerConfig:
    """Sized by the engine (`kiln.config.EngineConfig` holds the defaults) once the KV cache is."""

    max_num_seqs: int
    max_num_batched_tokens: int  # token budget of one step
    max_prefill_while_decoding: int  # prefill tokens of a step that also runs decodes
    block_size: int
    num_blocks: int
    enable_prefix_caching: bool
    max_model_len: int
    # A sequence preempted this many times is spared while any less-preempted one can go.
    max_preemptions: int = 3

    def __post_init__(self) -> None:
        for name in (
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_prefill_while_decoding",
            "block_size",
            "num_blocks",
        ):
            _require(getattr(self, name) >= 1, name, "must be >= 1")
        _require(self.max_model_len >= 1, "max_model_len", "must be >= 1")
        _require(self.max_preemptions >= 0, "max_preemptions", "must be >= 0")
        _require(
            self.max_num_batched_tokens >= self.max_num_seqs,
            "max_num_batched_tokens",
            f"must be >= max_num_seqs={self.max_num_seqs} so every running decode fits a step",
        )
        _require(
            self.max_model_len <= self.num_blocks * self.block_size,
            "max_model_len",
            f"must fit the KV cache ({self.num_blocks} blocks x {self.block_size} tokens); "
            "lower it or give the cache more blocks",
        )


def _require(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ValueError(f"SchedulerConfig.{name} {rule}")


@dataclass(frozen=True)
class ScheduledSeq:
    """Run tokens [start, start + num_new_tokens) of `seq` this step."""

    seq: Sequence
    num_new_tokens: int
    start: int  # seq.num_computed_tokens before this step

    # Both taken when the step is scheduled, so they stay true of this step after
    # `Scheduler.update` appends the sampled token.
    is_decode: bool = field(init=False)  # one token of a sequence that already has outputs
    # The chunk ends at the last token, so its logits give the next token.
    needs_sample: bool = field(init=False)

    def __post_init__(self) -> None:
        n = self.num_new_tokens
        object.__setattr__(self, "is_decode", n == 1 and _is_decoding(self.seq))
        object.__setattr__(self, "needs_sample", self.start + n == self.seq.num_tokens)


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)  # back to waiting; recompute later
    # Finished by the scheduler (finish_reason "length"): the KV cache cannot hold them.
    rejected: dict[str, str] = field(default_factory=dict)  # seq_id -> why
    num_batched_tokens: int = 0
    num_decodes: int = 0  # sequences that run their one next token
    num_prefill_tokens: int = 0  # the other tokens: prompt chunks and recomputes
    prefill_budget: int = 0  # the most prefill tokens this step could take

    @property
    def is_empty(self) -> bool:
        return not self.scheduled

    def add(self, seq: Sequence, num_new_tokens: int) -> None:
        item = ScheduledSeq(seq, num_new_tokens, seq.num_computed_tokens)
        self.scheduled.append(item)
        self.num_batched_tokens += num_new_tokens
        if item.is_decode:
            self.num_decodes += 1
        else:
            self.num_prefill_tokens += num_new_tokens


def _is_decoding(seq: Sequence) -> bool:
    """Has outputs and all but its last sampled token computed: its next step is one token."""
    return bool(seq.output_token_ids) and seq.num_uncomputed_tokens == 1


class Scheduler:
    """Decides which tokens of which sequences run each step, and owns their KV blocks."""

    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.block_manager = BlockManager(
            config.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # sorted by arrival, oldest first
        self.seqs: dict[str, Sequence] = {}  # every unfinished sequence
        self._num_arrived = 0
        self._arrived_tokens = 0  # prompt tokens added since the last schedule()
        self._arrivals: deque[int] = deque(maxlen=PREFILL_RATE_WINDOW)  # per step, newest last

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.seqs)

    def add(self, seq: Sequence) -> None:
        """Queue a new request; raises KilnError if it can never fit."""
        if seq.seq_id in self.seqs:
            raise KilnError(f"request id {seq.seq_id!r} is already running; use a unique id")
        limit = self.config.max_model_len
        if seq.num_tokens + seq.max_tokens > limit:
            raise KilnError(
                f"request {seq.seq_id!r}: {seq.num_tokens} prompt tokens + max_tokens="
                f"{seq.max_tokens} exceed the model's max length {limit}; shorten the prompt "
                "or lower max_tokens"
            )
        seq.arrival, seq.status = self._num_arrived, SequenceStatus.WAITING
        self._num_arrived += 1
        self._arrived_tokens += seq.num_tokens
        self.seqs[seq.seq_id] = seq
        self.waiting.append(seq)

    def abort(self, seq_id: str) -> None:
        """Drop a request wherever it is (client gone); unknown ids are ignored."""
        if seq_id in self.seqs:
            self.finish(seq_id, "abort")

    def finish(self, seq_id: str, reason: str) -> None:
        """End a request (the engine decided stop/length) and free its KV blocks."""
        seq = self.seqs.pop(seq_id)
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason

    def schedule(self) -> SchedulerOutput:
        """Pick this step's tokens; their KV blocks are allocated on return."""
        out = SchedulerOutput(prefill_budget=self._prefill_budget())
        self._schedule_running(out)
        if not out.preempted:  # memory is tight: admitting now would only thrash
            self._schedule_waiting(out)
        return out

    def _prefill_budget(self) -> int:
        """The step's prefill tokens: the whole budget when nothing decodes, else the bound or,
        when more, PREFILL_HEADROOM x the recent arrival rate of prompt tokens per step."""
        self._arrivals.append(self._arrived_tokens)
        self._arrived_tokens = 0
        cfg = self.config
        if not any(_is_decoding(s) for s in self.running):
            return cfg.max_num_batched_tokens
        pace = PREFILL_HEADROOM * sum(self._arrivals) / PREFILL_RATE_WINDOW
        return max(cfg.max_prefill_while_decoding, math.ceil(pace))

    def update(self, output: SchedulerOutput, sampled: dict[str, int]) -> list[Sequence]:
        """Record a finished step; returns the sequences that received a sampled token."""
        received = []
        for item in output.scheduled:
            seq = item.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue  # aborted or finished after schedule(): its result is moot
            assert seq.num_computed_tokens == item.start, f"{seq.seq_id}: output applied twice"
            needs_sample = item.needs_sample
            seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.cache_blocks(seq, item.start)
            if needs_sample:
                if seq.seq_id not in sampled:
                    raise KeyError(
                        f"no sampled token for {seq.seq_id}, whose step ended its tokens"
                    )
                seq.output_token_ids.append(sampled[seq.seq_id])
                received.append(seq)
        return received

    def _schedule_running(self, out: SchedulerOutput) -> None:
        """Oldest first; each keeps 1 token of budget for every running seq after it. A prefill
        chunk that the prefill budget leaves no token waits for a later step."""
        budget, i = self.config.max_num_batched_tokens - out.num_batched_tokens, 0
        while i < len(self.running):
            seq = self.running[i]
            reserve = len(self.running) - i - 1  # so decodes behind a prefill are never starved
            num_new = min(seq.num_uncomputed_tokens, budget - reserve)
            if not _is_decoding(seq):
                num_new = min(num_new, out.prefill_budget - out.num_prefill_tokens)
                if num_new < 1 and budget - reserve >= 1:
                    i += 1  # out of prefill budget, not of tokens or blocks: skip this step
                    continue
            num_new = min(num_new, self.block_manager.max_appendable(seq))  # shrink a chunk
            if num_new < 1:
                self._make_room(i, out)  # preempts a newer seq, or this one
                continue
            self.block_manager.append(seq, num_new)
            out.add(seq, num_new)
            budget -= num_new
            i += 1

    def _make_room(self, i: int, out: SchedulerOutput) -> None:
        """Preempt the newest unscheduled running seq, sparing often-preempted ones if possible."""
        candidates = self.running[i:]  # running[:i] are already scheduled this step
        fresh = [s for s in candidates if s.num_preemptions < self.config.max_preemptions]
        victim = (fresh or candidates)[-1]
        if len(self.running) == 1:  # alone and still short: the whole cache cannot hold it
            self._reject(victim, out)
        else:
            self._preempt(victim, out)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        """Free all of seq's blocks; it recomputes prompt + outputs when readmitted first."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_computed_tokens = seq.num_cached_tokens = 0
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)
        out.preempted.append(seq.seq_id)

    def _schedule_waiting(self, out: SchedulerOutput) -> None:
        """Admit waiting seqs in order (FCFS, no skipping) while budget, seats and blocks last."""
        bm = self.block_manager
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            budget = min(
                self.config.max_num_batched_tokens - out.num_batched_tokens,
                out.prefill_budget - out.num_prefill_tokens,
            )
            if budget < 1:
                return
            seq = self.waiting[0]
            num_new = min(seq.num_tokens - bm.num_cached_tokens(seq), budget)
            if not bm.can_allocate(seq, num_new):
                if self.running:
                    return  # wait for blocks to come back
                self._reject(seq, out)  # an empty cache cannot hold even this chunk
                continue
            self.waiting.popleft()
            bm.allocate(seq, num_new)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=lambda s: s.arrival)
            out.add(seq, num_new)

    def _reject(self, seq: Sequence, out: SchedulerOutput) -> None:
        cfg = self.config
        out.rejected[seq.seq_id] = (
            f"request {seq.seq_id!r} needs KV for {seq.num_tokens} tokens but the whole cache "
            f"holds {cfg.num_blocks * cfg.block_size}; lower max_tokens or add KV blocks"
        )
        self.finish(seq.seq_id, "length")
