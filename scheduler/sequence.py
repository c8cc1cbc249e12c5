"""One request as the scheduler sees it: tokens, KV bookkeeping and lifecycle status."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kiln.errors import KilnError


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()  # queued, holds no KV blocks
    RUNNING = enum.auto()  # holds KV blocks, scheduled every step
    FINISHED = enum.auto()  # done or aborted, holds nothing


@dataclass(eq=False)
class Sequence:
    """A request's tokens and where their KV lives.

    Invariant: KV exists for tokens [0, num_computed_tokens), stored in the blocks of
    `block_table` (token p in block `block_table[p // block_size]`). The last sampled token is
    not yet computed, so a running sequence always has at least one token left to run.
    """

    seq_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    # Chained hashes of the full blocks of all tokens; memoised because full blocks never change.
    block_hashes: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # of the computed tokens, how many came from prefix-cache hits
    arrival: int | None = None  # set by Scheduler.add; lower = older = higher priority
    num_preemptions: int = 0
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise KilnError(f"request {self.seq_id!r}: the prompt is empty; send at least 1 token")
        if self.max_tokens < 1:
            raise KilnError(f"request {self.seq_id!r}: max_tokens={self.max_tokens} must be >= 1")
        self.prompt_token_ids = list(self.prompt_token_ids)  # never alias the caller's list

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt then outputs: what a recompute after preemption runs again."""
        return self.prompt_token_ids + self.output_token_ids

    def token_ids(self, start: int, stop: int) -> list[int]:
        """all_token_ids[start:stop], without building the whole list (a step's slice)."""
        p = len(self.prompt_token_ids)
        if start >= p:
            return self.output_token_ids[start - p : stop - p]
        if stop <= p:
            return self.prompt_token_ids[start:stop]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - p]

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
