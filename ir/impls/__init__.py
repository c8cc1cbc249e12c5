"""Host-side (CPU) implementations of IR ops, registered under the `native` provider.

GPU kernels live in `ir/kernels/`; these are plain torch, vectorised where the reference
loops, and are bound to the CPU dispatch key when the engine runs on the CPU.
"""

from ir.impls import attention_native  # noqa: F401
