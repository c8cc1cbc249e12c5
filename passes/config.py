"""What a compile asks of the passes: `PassConfig` (frozen) and `PassToggles` (`--passes`)."""

from __future__ import annotations

from dataclasses import dataclass, field

QUANTIZATIONS = ("none", "fp8")
# Token counts the runtime captures CUDA graphs for; the padding pass rounds T up to these.
DEFAULT_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class PassToggles:
    """`--passes` parsed: `all_off` (from `none`) then explicit `+name` / `-name` overrides."""

    all_off: bool = False
    on: frozenset[str] = field(default_factory=frozenset)
    off: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        both = self.on & self.off
        if both:
            raise ValueError(f"passes {sorted(both)} are both enabled and disabled; pick one")

    def is_on(self, name: str, default_on: bool = True) -> bool:
        """`+name` / `-name` win; otherwise the pass's default, unless `none` turned it off."""
        if name in self.off:
            return False
        return name in self.on or (default_on and not self.all_off)


@dataclass(frozen=True)
class PassConfig:
    """Everything besides the graph that decides what the passes do (part of the cache key)."""

    quantization: str = "none"
    fp8_group_size: int = 0  # 0 = one activation scale per token; else features per scale
    tp_size: int = 1
    toggles: PassToggles = field(default_factory=PassToggles)
    pad_multiple: int = 64
    token_buckets: tuple[int, ...] = DEFAULT_TOKEN_BUCKETS

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization={self.quantization!r} is not supported; use one of {QUANTIZATIONS}"
            )
        if self.fp8_group_size < 0:
            raise ValueError(f"fp8_group_size={self.fp8_group_size} must be 0 (per token) or > 0")
        if self.tp_size < 1:
            raise ValueError(f"tp_size={self.tp_size} must be >= 1")
        if self.pad_multiple < 1:
            raise ValueError(f"pad_multiple={self.pad_multiple} must be >= 1 (1 = no padding)")
        if list(self.token_buckets) != sorted(set(self.token_buckets)) or (
            self.token_buckets and self.token_buckets[0] < 1
        ):
            raise ValueError(
                f"token_buckets={self.token_buckets} must be strictly increasing positive ints"
            )
