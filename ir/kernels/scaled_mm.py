"""fp8 GEMM through `torch._scaled_mm` (cuBLASLt / CUTLASS fp8 on sm_89+): the `library`
provider of `scaled_mm`.

vLLM's W8A8 granularity: dynamic per-token activation scales [T, 1] times per-channel weight
scales [N] (what `passes/quantize_fp8.py` produces with fp8_group_size=0), passed as row-wise
scales (scale_a [T, 1], scale_b [1, N], both fp32, bf16 output). Per-tensor scales go the same
way. Layouts `_scaled_mm` refuses (per-group activation scales, an output dtype other than
bf16 with row-wise scales, K or N not a multiple of 16) take the IR reference instead;
`fast_path_refusal` says which, and lowering records it in the manifest's op table.

The call is an aten op, so export keeps it in the graph and AOTInductor emits a direct call:
the same function is the eager and the in-graph form, and it is capturable in a CUDA graph.
"""

from __future__ import annotations

import torch

from ir.kernels.base import note_launch
from ir.registry import TargetLike, get_op, register_impl

NAME = "scaled_mm"
ALIGNMENT = 16  # cuBLASLt fp8 needs K and N multiples of 16 bytes


def supports(target: TargetLike) -> str | None:
    """cuBLASLt's fp8 GEMM: a CUDA target with fp8 tensor cores (sm_89+)."""
    if target.device_type != "cuda":
        return (
            f"cuBLASLt fp8 GEMM needs a CUDA target (target {target.name} is "
            f"{target.device_type}; the reference's dequantized fp32 matmul runs there)"
        )
    if not target.has_fp8:
        return f"needs fp8 tensor cores, sm_89+ (target {target.name} has none)"
    return None


def fast_path_refusal(xq, x_scale, wq, w_scale, out_dtype) -> str | None:
    """Why `torch._scaled_mm` cannot take these operands (None: it can)."""
    k, n = xq.shape[-1], wq.shape[0]
    if xq.dtype != torch.float8_e4m3fn or wq.dtype != torch.float8_e4m3fn:
        return f"operands are {xq.dtype}/{wq.dtype}, not float8_e4m3fn"
    if k % ALIGNMENT or n % ALIGNMENT:
        return f"K={k} and N={n} must be multiples of {ALIGNMENT}"
    per_tensor = x_scale.numel() == 1 and w_scale.numel() == 1
    if not per_tensor and (x_scale.dim() == 0 or x_scale.shape[-1] != 1):
        return "per-group activation scales (row-wise scaling needs one scale per token)"
    if not per_tensor and out_dtype != torch.bfloat16:
        return f"row-wise scaling writes bfloat16, not {out_dtype}"
    return None


def _scale_operands(x_scale, w_scale, rows: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale_a, scale_b) as `_scaled_mm` takes them: scalars, or [T, 1] and [1, N] fp32."""
    if x_scale.numel() == 1 and w_scale.numel() == 1:
        return x_scale.float().reshape(()), w_scale.float().reshape(())
    scale_a = x_scale.float().reshape(-1, 1).expand(rows, 1).contiguous()  # [T, 1]
    scale_b = w_scale.float().reshape(1, -1).expand(1, n).contiguous()  # [1, N]
    return scale_a, scale_b


def scaled_mm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """xq [..., K] fp8 @ wq [N, K].T fp8 -> [..., N] in out_dtype, fp32 accumulation."""
    refusal = fast_path_refusal(xq, x_scale, wq, w_scale, out_dtype)
    note_launch("aten._scaled_mm" if refusal is None else f"reference: {refusal}")
    return run_scaled_mm(xq, x_scale, wq, w_scale, bias, out_dtype, refusal)


def run_scaled_mm(xq, x_scale, wq, w_scale, bias, out_dtype, refusal: str | None):
    """`scaled_mm` without noting the launch, given `fast_path_refusal`'s answer: a branch of
    `torch.cond` (`scaled_mm_small_m.py`) must not touch Python state while it is traced."""
    if refusal is not None:
        return get_op(NAME).reference(xq, x_scale, wq, w_scale, bias, out_dtype)
    lead, k, n = xq.shape[:-1], xq.shape[-1], wq.shape[0]
    a = xq.reshape(-1, k)  # [T, K] row-major
    scale_a, scale_b = _scale_operands(x_scale, w_scale, a.shape[0], n)
    out = torch._scaled_mm(a, wq.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)
    if bias is not None:
        out = out + bias.to(out_dtype)
    return out.reshape(*lead, n)


register_impl(
    NAME,
    provider="library",
    supports=supports,
    description="torch._scaled_mm (cuBLASLt fp8), row-wise scales",
    in_graph=scaled_mm,  # an aten call: export keeps it, AOTInductor calls it directly
)(scaled_mm)
