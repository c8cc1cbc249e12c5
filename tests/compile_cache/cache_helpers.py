"""Shared helpers for compile cache tests: random factors and a builder that counts its runs."""

from __future__ import annotations

import os
import random
from pathlib import Path

from compile_cache import compute_key

BLOB_PATH = "kernels/rms_norm.cubin"


def factors_for(model: str, seed: int = 0) -> dict:
    rng = random.Random(seed)
    return {
        "model": model,
        "graph_hash": f"{rng.getrandbits(256):064x}",
        "dtype": rng.choice(["bfloat16", "float16"]),
        "target": {"name": "cpu"},
        "versions": {"torch": "2.13.0", "kiln": "0.1.0"},
    }


def key_and_factors(model: str, seed: int = 0) -> tuple[str, dict]:
    factors = factors_for(model, seed)
    return compute_key(factors), factors


class CountingBuilder:
    """Writes random non-zero files (a module and a nested blob) and counts its calls."""

    def __init__(self, blob_size: int = 4096, seed: int = 1) -> None:
        self.calls = 0
        self.blob_size = blob_size
        self.rng = random.Random(seed)

    def __call__(self, staging: Path) -> dict:
        self.calls += 1
        assert not any(staging.iterdir()), "the store hands the builder an empty folder"
        (staging / "module.py").write_text(f"SCALE = {self.rng.uniform(0.5, 2.0)!r}\n")
        (staging / "kernels").mkdir()
        blob = bytes(self.rng.randint(1, 255) for _ in range(self.blob_size))
        (staging / BLOB_PATH).write_bytes(blob)
        return {"model": "tiny-llama", "target": "cpu", "passes": ["FuseAddRMSNorm"]}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
    assert os.path.getsize(path) == size
