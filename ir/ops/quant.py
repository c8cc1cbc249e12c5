"""FP8 quantization IR ops: dynamic (per-token, per-group) and static quantization, scaled_mm.

Scales are fp32 and multiply back: x ~= xq.float() * scale. A per-token scale is [T, 1], a
per-group scale [T, K // group_size], a static scale [1]; `scaled_mm` accepts all three.
"""

import torch

from ir.registry import ir_op

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
# Floor on a dynamic scale so an all-zero row quantizes to zeros instead of 0/0.
MIN_SCALE = 1e-12


def check_group_size(k: int, group_size: int) -> None:
    if group_size < 0 or (group_size > 0 and k % group_size != 0):
        raise ValueError(
            f"group_size={group_size} must be 0 (per token) or a positive divisor of the "
            f"last dimension {k}"
        )


@ir_op("quant_fp8", example=lambda: (torch.randn(5, 256), 128))
def quant_fp8(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic fp8 quantization of x [..., K]: returns (xq fp8 [..., K], scale fp32).

    group_size == 0: one scale per token, [..., 1]; group_size > 0: one scale per group of
    `group_size` consecutive features, [..., K // group_size]. scale = amax(|x|) / FP8_MAX
    (at least MIN_SCALE), xq = clamp(x / scale, -FP8_MAX, FP8_MAX) rounded to e4m3.
    """
    k = x.shape[-1]
    check_group_size(k, group_size)
    g = k if group_size == 0 else group_size
    xg = x.float().unflatten(-1, (k // g, g))  # [..., K // g, g]
    scale = (xg.abs().amax(dim=-1) / FP8_MAX).clamp(min=MIN_SCALE)  # [..., K // g]
    xq = (xg / scale.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return xq.flatten(-2), scale


def expand_scale(scale: torch.Tensor, k: int) -> torch.Tensor:
    """Broadcastable fp32 scale for a [T, K] tensor from a [T, K // g], [T, 1] or [1] scale."""
    if scale.dim() == 2 and scale.shape[1] > 1:
        return scale.float().repeat_interleave(k // scale.shape[1], dim=1)  # [T, K]
    return scale.float()


def dequant_fp8(xq: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 values of a quantized [T, K] tensor under a [T, K // g], [T, 1] or [1] scale."""
    return xq.float() * expand_scale(scale, xq.shape[-1])


def _fp8(*shape: int) -> torch.Tensor:
    return (torch.randn(shape) * 10).to(FP8_DTYPE)


def _scaled_mm_example() -> tuple:
    """Per-group activation scales (2 groups of 32), per-channel weight scales, a bias."""
    x_scale, w_scale = torch.rand(5, 2) + 0.1, torch.rand(8) + 0.1
    return _fp8(5, 64), x_scale, _fp8(8, 64), w_scale, torch.randn(8), torch.bfloat16


@ir_op("scaled_mm", example=_scaled_mm_example)
def scaled_mm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """fp8 linear layer: dequant(xq [T, K]) @ dequant(wq [N, K]).T + bias, as out_dtype [T, N].

    x_scale is per token [T, 1], per group [T, K // g] or per tensor [1]; w_scale is per output
    channel [N] (or per tensor [1]). Accumulation is fp32.
    """
    x = dequant_fp8(xq, x_scale)  # [T, K]
    w = wq.float() * w_scale.float().reshape(-1, 1)  # [N, K]
    out = x @ w.t()  # [T, N]
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def quantize_weight_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Online fp8 quantization of a weight w [N, K] at load: (wq fp8 [N, K], w_scale fp32 [N])."""
    wq, scale = quant_fp8.reference(w, 0)
    return wq, scale.squeeze(-1)
