"""`kiln tune`: options, the model-shaped kernel arguments, and (gpu) a quick tuning run."""

from __future__ import annotations

import json

import pytest
import torch

from ir.kernels.base import all_kernels
from kiln.errors import KilnError
from lowering.tune import TuneOptions, applies, helion_fn, kernel_args
from model_defs.registry import read_config, resolve_model_path

HELION = [(s.name, v) for s in all_kernels() if s.provider == "helion" for v in s.variants]


@pytest.mark.parametrize("kw, message", [
    (dict(effort="slow"), "--effort='slow'"),
    (dict(tokens=1), "--tokens=1"),
    (dict(variants="some"), "--variants='some'"),
])  # fmt: skip
def test_bad_options_say_what_to_fix(kw, message):
    with pytest.raises(KilnError, match=message):
        TuneOptions(model="demo", **kw)


@pytest.mark.parametrize("name, variant", HELION)
def test_model_shaped_args_run_the_kernel_like_its_example_args(name, variant):
    """The tuner's arguments fit the Helion kernel (interpret mode here) as `example_args`
    do: same arity and dtypes, the demo's widths."""
    from ir.kernels.helion_util import run_helion

    _, cfg = read_config(resolve_model_path("demo"))
    if not applies(name, variant, cfg):
        pytest.skip(f"{variant} does not divide the demo's widths")
    args = kernel_args(name, variant, cfg, 3, device="cpu")
    example = next(s for s in all_kernels() if s.name == name).example_args("cpu", variant)
    assert len(args) == len(example)
    for a, e in zip(args, example, strict=True):
        assert type(a) is type(e) and getattr(a, "dtype", None) == getattr(e, "dtype", None)
    widths = {d for a in args if isinstance(a, torch.Tensor) for d in a.shape[1:]}
    assert widths & {cfg.hidden_size, 2 * cfg.intermediate_size, cfg.head_dim}
    from ir.kernels.base import load_config, variant_config

    config = variant_config(load_config(name, "h100"), variant)
    run_helion(helion_fn(name, variant), config, *args)  # raises if the shapes don't fit


@pytest.mark.gpu
def test_quick_tune_writes_config_and_record(tmp_path, monkeypatch):
    import ir.kernels.base as base
    from lowering.tune import tune_model

    for target in base.CONFIG_TARGETS:
        (tmp_path / target).mkdir()
        src = base.CONFIG_DIR / target / "rms_norm.json"
        (tmp_path / target / "rms_norm.json").write_text(src.read_text())
    monkeypatch.setattr(base, "CONFIG_DIR", tmp_path)
    written = tune_model(TuneOptions(model="demo", kernels=("rms_norm",)), progress=print)
    data = json.loads(written["rms_norm"].read_text())
    record = data.pop("record")
    assert record["card"] == torch.cuda.get_device_name()
    times = record["variants"]["default"]
    assert times["effort"] == "quick" and times["tuned_us"] > 0 and times["default_us"] > 0
    fastest = min(("default", "pinned", "tuned"), key=lambda c: times[f"{c}_us"])  # rms_norm
    # has a committed config, so all three were timed
    assert times["chosen"] == fastest  # the config written is the fastest of the three
    assert "block_sizes" in data  # a Helion config lowering can pin


def test_written_files_keep_untuned_variants_and_load_without_the_record(tmp_path, monkeypatch):
    """The file logic around the search (the search itself runs on a GPU, test above): tuned
    variants replace theirs, others stay, the record holds the timings, `load_config` pins
    only configs."""
    import ir.kernels.base as base
    import lowering.tune as tune

    for target in base.CONFIG_TARGETS:
        (tmp_path / target).mkdir()
        for name in ("rms_norm", "silu_and_mul_quant"):
            src = base.CONFIG_DIR / target / f"{name}.json"
            (tmp_path / target / f"{name}.json").write_text(src.read_text())
    monkeypatch.setattr(base, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(tune, "_host_target", lambda name: base_target("h100"))
    monkeypatch.setattr(tune, "kernel_args", lambda *a, **k: ())
    monkeypatch.setattr(tune, "_record", lambda cfg, o, timings: {"variants": timings})
    seen = []

    def fake_search(fn, args, pinned, effort, budget=None):
        seen.append((fn.__name__, pinned))
        return {"num_warps": 2, "tuned_for": fn.__name__}, {"tuned_us": 1.0, "default_us": 2.0}

    monkeypatch.setattr(tune, "tune_variant", fake_search)
    options = TuneOptions(model="demo", kernels=("rms_norm", "silu_and_mul_quant"))
    written = tune.tune_model(options, progress=lambda m: None)
    quant = json.loads(written["silu_and_mul_quant"].read_text())
    assert quant["per_token"]["tuned_for"] == "silu_and_mul_quant_kernel"
    assert "tuned_for" not in quant["group128"]  # not a Llama variant: kept as it was
    assert quant["record"]["variants"]["per_token"]["tuned_us"] == 1.0
    assert seen[0] == ("rms_norm_kernel", base.load_config("rms_norm", "h100"))
    base.load_config.cache_clear()
    assert "record" not in base.load_config("rms_norm", "h100")
    assert base.load_config("rms_norm", "h100")["tuned_for"] == "rms_norm_kernel"
    base.load_config.cache_clear()


def base_target(name: str):
    from ir.targets import get_target

    return get_target(name)
