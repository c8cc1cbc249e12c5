"""Helion and Triton kernels for IR ops, one per file; importing this package registers them.

Registration is metadata only: no kernel file imports helion at module level, so this import
stays cheap (the serve path must never import helion).
"""

from ir.kernels import (  # noqa: F401
    attention,
    attention_quant,
    fused_add_rms_norm,
    fused_add_rms_norm_quant,
    qk_norm_rope,
    quant_fp8,
    rms_norm,
    rms_norm_quant,
    rotary_embedding,
    scaled_mm,
    silu_and_mul,
    silu_and_mul_quant,
)
