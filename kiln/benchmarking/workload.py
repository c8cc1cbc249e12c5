"""What a throughput benchmark submits: batch sizes, lengths, and seeded random prompts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kiln.errors import KilnError

WARMUP_SEED_OFFSET = 7919  # warm-up prompts differ from measured ones (no prefix-cache hits)


@dataclass(frozen=True)
class Workload:
    """Every batch size runs `batch_size` prompts of `input_len` random tokens, each greedy
    for exactly `output_len` tokens (EOS ignored)."""

    batch_sizes: tuple[int, ...]
    input_len: int
    output_len: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise KilnError("batch_sizes is empty; pass e.g. --batch-sizes 1,8,32")
        bad = [b for b in self.batch_sizes if b < 1]
        if bad:
            raise KilnError(f"batch_sizes={list(self.batch_sizes)} holds {bad}; each must be >= 1")
        for name in ("input_len", "output_len"):
            if getattr(self, name) < 1:
                raise KilnError(f"{name}={getattr(self, name)} must be >= 1")

    def prompts(self, batch_size: int, vocab_size: int) -> list[list[int]]:
        """The measured prompts of one batch size: the same on every run and engine."""
        return random_prompts(
            batch_size, self.input_len, vocab_size, self.seed * 1_000_003 + batch_size
        )

    def warmup_prompts(self, vocab_size: int) -> list[list[int]]:
        """Warm-up prompts at the largest batch size, distinct from every measured prompt."""
        seed = (self.seed + WARMUP_SEED_OFFSET) * 1_000_003
        return random_prompts(max(self.batch_sizes), self.input_len, vocab_size, seed)


def random_prompts(n: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    """`n` prompts of `length` token ids drawn uniformly from [0, vocab_size), seeded."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(length)] for _ in range(n)]


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); a clear error for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise KilnError(
            f"--batch-sizes {text!r} must be comma-separated integers like 1,8,32"
        ) from None
    if not sizes or min(sizes) < 1:
        raise KilnError(f"--batch-sizes {text!r} must list integers >= 1, like 1,8,32")
    return sizes
