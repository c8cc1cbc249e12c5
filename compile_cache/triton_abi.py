"""What a Triton kernel launch looks like to its cubin, agreed on by the writer of a plan
artifact (`lowering/`, which compiles) and its reader (`runtime/`, which launches).

Triton's JIT turns each runtime argument into a type ("*bf16", "i32", "fp32") and may
specialize on its value: an int equal to 1 becomes a compile-time constant, and an int
divisible by 16 or a pointer aligned to 16 bytes gets a divisibility hint. A cubin built
under such assumptions may only be launched with arguments that still satisfy them.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import torch

DIVISIBILITY = 16
DTYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "fp8e4nv",
    torch.float8_e5m2: "fp8e5",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "i1",
}


def arg_type(value: Any) -> tuple[str, str | None]:
    """(Triton type, specialization "one" | "div16" | None) of one runtime argument, as
    Triton's JIT specializes it. A meta tensor (recorded without data) is aligned where its
    storage offset is."""
    if isinstance(value, torch.Tensor):
        if value.dtype not in DTYPES:
            raise TypeError(f"no Triton pointer type for {value.dtype}")
        if value.device.type == "meta":
            aligned = value.storage_offset() * value.element_size() % DIVISIBILITY == 0
        else:
            aligned = value.data_ptr() % DIVISIBILITY == 0
        return "*" + DTYPES[value.dtype], "div16" if aligned else None
    if isinstance(value, bool):
        return "i1", None
    if isinstance(value, int):
        kind = "i32" if -(2**31) <= value < 2**31 else "i64"
        if value == 1:
            return kind, "one"
        return kind, "div16" if value % DIVISIBILITY == 0 else None
    if isinstance(value, float):
        return "fp32", None
    raise TypeError(f"cannot pass {type(value).__name__} to a Triton kernel")


def source_hash(fn: Any) -> str:
    """sha256 of a @triton.jit function's Python source (decorator included): a launch is
    matched to its cubins by function name and this hash, whatever Triton release runs."""
    return hashlib.sha256(inspect.getsource(fn.fn).encode()).hexdigest()


def constexpr_value(value: Any) -> Any:
    return getattr(value, "value", value)  # tl.constexpr(8) -> 8
