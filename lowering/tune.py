"""`kiln tune`: run Helion's autotuner for a target's kernels at a model's shapes on this
host's GPU and write the configs lowering pins (ir/kernels/configs/<target>/<kernel>.json).

Each file keeps one config per variant it tunes (others keep their earlier config) and a
`record`: card, date, search effort, Helion version, the shape tuned at, and per variant the
time in microseconds of Helion's default config, the config pinned before, and the tuned one
(`triton.testing.do_bench` medians on the same inputs), and which of the three it pins: the
fastest.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kiln.errors import KilnError

EFFORTS = ("quick", "full")
# Variants a Llama-style model runs (neox rotary; per-token fp8 scales, fp8_group_size=0);
# `variants="all"` tunes the others too.
MODEL_VARIANTS = ("default", "neox", "per_token")


@dataclass(frozen=True)
class TuneOptions:
    model: str
    target: str = "auto"
    effort: str = "quick"
    tokens: int = 32  # rows the kernels are tuned at (decode at batch 32)
    kernels: tuple[str, ...] = ()  # empty: every Helion kernel
    variants: str = "model"  # "model" (MODEL_VARIANTS) or "all"
    budget_seconds: int | None = None  # per variant search, where Helion takes a budget

    def __post_init__(self) -> None:
        if self.effort not in EFFORTS:
            raise KilnError(f"--effort={self.effort!r}: choose one of {', '.join(EFFORTS)}")
        if self.tokens < 2:
            raise KilnError(f"--tokens={self.tokens} must be >= 2 (1 is a specialised size)")
        if self.variants not in ("model", "all"):
            raise KilnError(f"--variants={self.variants!r}: choose 'model' or 'all'")
        if self.budget_seconds is not None and self.budget_seconds < 1:
            raise KilnError(f"--budget-seconds={self.budget_seconds} must be >= 1")


def _row(t: int, width: int, dtype, gen) -> torch.Tensor:
    return torch.randn(t, width, generator=gen, device=gen.device).to(dtype)


def kernel_args(name: str, variant: str, cfg, t: int, device: str = "cuda") -> tuple:
    """The Helion kernel's own arguments (as its `example_args`) at the model's shapes."""
    gen = torch.Generator(device=device).manual_seed(0)
    h, i, bf16 = cfg.hidden_size, cfg.intermediate_size, torch.bfloat16
    x, r, w = _row(t, h, bf16, gen), _row(t, h, bf16, gen), _row(1, h, bf16, gen)[0]
    group = {"per_token": None, "group128": 128}.get(variant)
    builders: dict[str, Callable[[], tuple]] = {
        "rms_norm": lambda: (x, w, cfg.rms_norm_eps),
        "fused_add_rms_norm": lambda: (x, r, w, cfg.rms_norm_eps),
        "silu_and_mul": lambda: (_row(t, 2 * i, bf16, gen),),
        "quant_fp8": lambda: (x, group or h),
        "rms_norm_quant": lambda: (x, w, cfg.rms_norm_eps, group or h),
        "fused_add_rms_norm_quant": lambda: (x, r, w, cfg.rms_norm_eps, group or h),
        "silu_and_mul_quant": lambda: (_row(t, 2 * i, bf16, gen), group or i),
        "rotary_embedding": lambda: _rotary_args(cfg, t, gen),
    }
    if name not in builders:
        raise KilnError(f"kiln tune has no shapes for kernel {name!r}")
    return builders[name]()


def applies(name: str, variant: str, cfg) -> bool:
    """A 128-wide-group variant needs the quantized width (hidden or intermediate) to divide."""
    if variant != "group128":
        return True
    width = cfg.intermediate_size if name == "silu_and_mul_quant" else cfg.hidden_size
    return width % 128 == 0


def _rotary_args(cfg, t: int, gen) -> tuple:
    d = cfg.head_dim
    rot = int(d * cfg.partial_rotary_factor)
    device = gen.device
    positions = torch.randint(0, 4096, (t,), device=device, generator=gen)
    q = torch.randn(t, cfg.num_heads, d, device=device, generator=gen).to(torch.bfloat16)
    k = torch.randn(t, cfg.num_kv_heads, d, device=device, generator=gen).to(torch.bfloat16)
    return positions, q, k, torch.randn(4096, rot, device=device, generator=gen)


def helion_fn(name: str, variant: str) -> Callable:
    """The Helion kernel function behind kernel `name` (rotary: one per variant)."""
    import importlib

    module = importlib.import_module(f"ir.kernels.{name}")
    if name == "rotary_embedding":
        return module.KERNELS[variant]
    return getattr(module, f"{name}_kernel")


def tune_variant(
    fn: Callable, args: tuple, pinned: dict, effort: str, budget: int | None = None
) -> tuple[dict, dict]:
    """(config to pin, {"default_us", "tuned_us", "pinned_us" (if any), "chosen"}) for one
    variant.

    The autotuner's pick is timed again beside Helion's default and the config pinned before,
    on the same inputs; the fastest of the three is the one pinned, so a quick search that
    lands on a slower config (its own timings are noisier) never replaces a faster one.
    """
    from ir.kernels.helion_util import import_helion

    helion = import_helion(fn.__globals__)
    settings = {"static_shapes": False, "autotune_effort": effort}
    if budget is not None and _has_setting(helion, "autotune_budget_seconds"):
        settings["autotune_budget_seconds"] = budget
    kernel = helion.kernel(**settings)(fn)
    bound = kernel.bind(args)
    tuned = bound.autotune(args, force=True)
    spec = getattr(bound, "config_spec", None) or bound.env.config_spec
    candidates = {"default": spec.default_config(), "tuned": tuned}
    if pinned:  # a kernel with no config file yet has nothing pinned to compare
        candidates["pinned"] = helion.Config(**pinned)
    times = {f"{name}_us": _time_us(bound, config, args) for name, config in candidates.items()}
    chosen = min(candidates, key=lambda name: times[f"{name}_us"])
    return json.loads(candidates[chosen].to_json()), {**times, "chosen": chosen}


def _has_setting(helion, name: str) -> bool:
    import dataclasses

    return name in {f.name for f in dataclasses.fields(helion.Settings)}


def _time_us(bound, config, args: tuple) -> float:
    import triton

    compiled = bound.compile_config(config, allow_print=False)
    return round(triton.testing.do_bench(lambda: compiled(*args)) * 1e3, 2)


def tune_model(options: TuneOptions, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Tune every selected Helion kernel variant; returns {kernel: config file written}."""
    from ir.kernels.base import CONFIG_DIR
    from model_defs.registry import read_config, resolve_model_path

    target = _host_target(options.target)
    _, cfg = read_config(resolve_model_path(options.model))
    written = {}
    for spec in _selected_kernels(options.kernels):
        variants = [
            v
            for v in spec.variants
            if (options.variants == "all" or v in MODEL_VARIANTS) and applies(spec.name, v, cfg)
        ]
        path = CONFIG_DIR / target.name / f"{spec.name}.json"
        current = json.loads(path.read_text()) if path.is_file() else {}
        record = current.pop("record", {})
        timings = dict(record.get("variants", {}))
        for variant in variants:
            progress(f"[kiln tune] {spec.name}.{variant} ({options.effort}) ...")
            # A file of one config (no variant keys) pins it for every variant.
            pinned = current.get(variant) or {
                k: v for k, v in current.items() if k not in spec.variants
            }
            args = kernel_args(spec.name, variant, cfg, options.tokens)
            fn = helion_fn(spec.name, variant)
            config, times = tune_variant(fn, args, pinned, options.effort, options.budget_seconds)
            current = {**current, variant: config} if spec.variants != ("default",) else config
            search = {"effort": options.effort, "budget_seconds": options.budget_seconds}
            timings[variant] = {**times, **search, "tokens": options.tokens, "date": _today()}
            progress(f"[kiln tune] {spec.name}.{variant}: {times}")
        current["record"] = _record(cfg, options, timings)
        path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
        written[spec.name] = path
    return written


def _host_target(name: str):
    from ir.targets import get_target

    if not torch.cuda.is_available():
        raise KilnError("kiln tune runs Helion's autotuner on this host's GPU, and it has none")
    target = get_target(name)
    major, minor = torch.cuda.get_device_capability()
    if target.device_type != "cuda" or target.compute_capability != (major, minor):
        raise KilnError(
            f"--target {name} is not this host's GPU ({torch.cuda.get_device_name()}, "
            f"sm_{major}{minor}); tune on the target card with --target auto"
        )
    return target


def _selected_kernels(names: tuple[str, ...]) -> list:
    from ir.kernels.base import all_kernels

    helion = {s.name: s for s in all_kernels() if s.provider == "helion"}
    unknown = sorted(set(names) - set(helion))
    if unknown:
        raise KilnError(
            f"--kernels: {', '.join(unknown)} not Helion kernels; known: {sorted(helion)}"
        )
    return [helion[n] for n in sorted(names or helion)]


def _record(cfg, options: TuneOptions, timings: dict) -> dict:
    import helion

    return {
        "card": torch.cuda.get_device_name(),
        "date": _today(),
        "helion": getattr(helion, "__version__", _dist_version("helion")),
        "shape": {
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "heads": [cfg.num_heads, cfg.num_kv_heads, cfg.head_dim],
            "tokens": options.tokens,
        },
        "variants": timings,  # per variant: effort, date, default/pinned/tuned us, chosen
    }


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
