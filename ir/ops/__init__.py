"""Built-in IR ops. Importing this package registers them all as `torch.ops.kiln.*`."""

from ir.ops import activation, attention, collective, fused, norm, quant, rotary  # noqa: F401  # noqa: F401
