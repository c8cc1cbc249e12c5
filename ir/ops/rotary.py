"""Rotary position embedding IR op (neox and gpt-j layouts, partial rotary)."""

import torch

from ir.ops.examples import rope_args
from ir.registry import ir_op


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool) -> torch.Tensor:
    # x: [T, H, rot_dim]; cos/sin: [T, 1, rot_dim // 2]
    if is_neox:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)


@ir_op("rotary_embedding", example=lambda: rope_args())
def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq, D] and k [T, Hk, D] by position.

    `cos_sin_cache` is [max_pos, rot_dim] = [cos | sin] (fp32). Only the first rot_dim
    features of each head rotate (partial rotary); neox rotates halves, gpt-j interleaved pairs.
    """
    rot_dim = cos_sin_cache.shape[-1]
    cos, sin = cos_sin_cache.index_select(0, positions).unsqueeze(1).chunk(2, dim=-1)

    def apply(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        rotated = _rotate(xf[..., :rot_dim], cos, sin, is_neox)
        return torch.cat((rotated, xf[..., rot_dim:]), dim=-1).to(x.dtype)

    return apply(q), apply(k)
