"""Helion and Triton kernels for IR ops, one per file; importing this package registers them.

Registration is metadata only: no kernel file imports helion at module level, so this import
stays cheap (the serve path must never import helion).
"""

from lowering.kernels import (  # noqa: F401
    attention,
    fused_add_rms_norm,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
)
