"""Helion and Triton kernels for IR ops, one per file; importing this package registers them.

Registration is metadata only: no kernel file imports helion at module level, so this import
stays cheap (the serve path must never import helion).
"""

from lowering.kernels import rms_norm  # noqa: F401
