"""What an artifact's files mean, shared by its writer (`lowering/`) and its reader
(`runtime/loaders/`), so neither side imports the other.

`manifest["lowering"]` names the artifact's kind; the runtime picks its loader by it. The
`inductor_jit` kind is run through `jit_program` on both sides with the same Inductor options:
the compile fills Inductor's cache and the load must hit it.
"""

from __future__ import annotations

ARTIFACT_FORMAT = 1

AOTI = "aoti"  # an AOTInductor `.pt2` package, loaded through the C++ loader
INDUCTOR_JIT = "inductor_jit"  # an exported program run under torch.compile at load
AOTI_PIECEWISE = "aoti_piecewise"  # one `.pt2` package per distinct piece, called per the plan
# An execution plan (plan.json) over cubins compiled for the target arch (kernels/): built on
# any host (a GPU target the host lacks included), run with no compiler by loaders/plan.py.
PLAN = "plan"
PLAN_FORMAT = 1  # plan.json's layout; a loader refuses another

# The IR references are the spec, rounding included (e.g. silu_and_mul rounds silu's output to
# the activation dtype before the product). Inductor keeps fused intermediates in fp32 unless
# told to round where eager code would (CPU demo, bf16: compiled vs reference 0.0199 -> 0.0174).
INDUCTOR_OPTIONS = {"emulate_precision_casts": True}


def jit_program(ep, inputs: list[str]):
    """An exported program under Inductor, every size dynamic. Dynamo still specialises sizes
    0 and 1, so a few graphs exist (single-token and single-sequence steps); `kiln compile`
    runs each once so their code is in the Inductor cache when a server loads them."""
    import torch
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    return torch.compile(ep.module(), dynamic=True, fullgraph=True, options=INDUCTOR_OPTIONS)
