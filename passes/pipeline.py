"""The pass pipeline, in phase order, and `--passes` parsing.

To add a pass: write `passes/<verb>.py` with one class, then add one line below in its phase.
"""

from __future__ import annotations

from kiln.errors import KilnError
from passes.base import Pass
from passes.config import PassToggles
from passes.eliminate_noops import EliminateNoops
from passes.fuse_act_quant import FuseActQuant
from passes.fuse_add_rms_norm import FuseAddRMSNorm
from passes.fuse_all_reduce_rms_norm import FuseAllReduceRMSNorm
from passes.fuse_attn_quant import FuseAttnQuant
from passes.fuse_norm_quant import FuseNormQuant
from passes.fuse_qk_norm_rope import FuseQKNormRope
from passes.pad_for_kernels import PadForKernels
from passes.quantize_fp8 import QuantizeFP8


def default_pipeline() -> list[Pass]:
    return [
        # cleanup
        EliminateNoops(),
        # fusions
        FuseAddRMSNorm(),
        FuseQKNormRope(),
        # quantization (--quantization fp8)
        QuantizeFP8(),
        FuseNormQuant(),
        FuseActQuant(),
        FuseAttnQuant(),
        # collectives (tensor parallel)
        FuseAllReduceRMSNorm(),
        # padding
        PadForKernels(),
    ]


def pass_names(pipeline: list[Pass] | None = None) -> list[str]:
    return [p.name for p in (pipeline or default_pipeline())]


def parse_toggles(text: str | None, pipeline: list[Pass] | None = None) -> PassToggles:
    """`none`, `-name`, `+name` (or `name`), comma separated, applied left to right.

    `none` turns every optional pass off; `+name` turns one back on, `-name` off. A pass that
    is not optional (quantize_fp8: it is what --quantization asks for) cannot be turned off.
    """
    pipeline = pipeline or default_pipeline()
    by_name = {p.name: p for p in pipeline}
    all_off, on, off = False, set(), set()
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        if item in ("none", "all"):
            all_off, on, off = item == "none", set(), set()
            continue
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        if name not in by_name:
            raise KilnError(
                f"unknown pass {name!r} in --passes {text!r}; valid passes: "
                f"{', '.join(by_name)} (or 'none')"
            )
        if sign == "-" and not by_name[name].optional:
            raise KilnError(f"pass {name!r} is required by the chosen options and cannot be off")
        (on if sign == "+" else off).add(name)
        (off if sign == "+" else on).discard(name)
    return PassToggles(all_off, frozenset(on), frozenset(off))
