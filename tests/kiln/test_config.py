"""EngineConfig rejects bad values with a message naming the field and the fix."""

import pytest

from kiln.config import EngineConfig
from kiln.errors import KilnError


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"dtype": "int3"}, "dtype='int3' is not supported"),
        ({"device": "tpu"}, "device='tpu' is invalid"),
        ({"max_num_seqs": 0}, "max_num_seqs=0 must be >= 1"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5 must be in"),
        ({"compile": "sometimes"}, "compile='sometimes' is invalid"),
        ({"quantization": "int4"}, "quantization='int4' is not supported"),
        ({"tensor_parallel_size": 2}, "multi-GPU execution is not built yet"),
        ({"max_model_len": 1}, "max_model_len=1 must be >= 2"),
        ({"max_prefill_while_decoding": 0}, "max_prefill_while_decoding=0 must be >= 1"),
    ],
)
def test_bad_engine_config(kw, message):
    with pytest.raises(KilnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EngineConfig(**kw)


@pytest.mark.parametrize(
    "verb, overrides",
    [
        (["generate"], {}),
        (["serve"], {"compile": "on_miss"}),
        (["bench", "throughput"], {}),
    ],
)
def test_engine_flags_default_to_engine_config(verb, overrides):
    """The engine flags of every verb that builds an engine come from EngineConfig, so an
    unflagged run is the default engine (serve alone compiles on a miss by default)."""
    from kiln.cli import build_parser
    from kiln.commands.flags import engine_kwargs

    args = build_parser().parse_args(verb)
    assert EngineConfig(model=args.model, **engine_kwargs(args)) == EngineConfig(**overrides)


def test_compile_defaults_match_the_engine():
    """`kiln compile` with no flags builds the artifact a default engine looks up."""
    from kiln.cli import build_parser
    from kiln.commands.flags import engine_kwargs
    from kiln.config import COMPILE_FIELDS
    from kiln.resolve import compile_options, engine_compile_options
    from lowering.compile import CompileOptions

    args = build_parser().parse_args(["compile"])
    flagged = compile_options(args.model, **engine_kwargs(args, COMPILE_FIELDS))
    assert flagged == engine_compile_options(EngineConfig()) == CompileOptions()


def test_scheduler_config_has_no_defaults_of_its_own():
    """Engine sizes are defined once (EngineConfig); the scheduler is always told them."""
    from dataclasses import MISSING, fields

    from scheduler import SchedulerConfig

    defaulted = {f.name for f in fields(SchedulerConfig) if f.default is not MISSING}
    assert defaulted == {"max_preemptions"}


def test_building_the_cli_parser_imports_no_torch():
    """`kiln --help` stays instant: command modules and the flags they derive import no torch."""
    import subprocess
    import sys

    code = "import sys, kiln.cli; kiln.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unset_prefill_bound_is_the_step_budget_but_for_a_graphed_server():
    from runtime.startup import SERVED_GPU_PREFILL_WHILE_DECODING, scheduler_config

    unset = scheduler_config(EngineConfig(max_num_batched_tokens=300), 64, 256)
    bound = scheduler_config(EngineConfig(max_prefill_while_decoding=96), 64, 256)
    assert unset.max_prefill_while_decoding == unset.max_num_batched_tokens == 300
    assert bound.max_prefill_while_decoding == 96
    served = scheduler_config(EngineConfig(max_num_batched_tokens=300), 64, 256,
                              graphed_server=True)  # fmt: skip
    assert served.max_prefill_while_decoding == SERVED_GPU_PREFILL_WHILE_DECODING < 300
    # a bound at or above the budget is no bound; the budget caps the served default
    off = scheduler_config(EngineConfig(max_prefill_while_decoding=4096), 64, 256,
                           graphed_server=True)  # fmt: skip
    small = scheduler_config(EngineConfig(max_num_batched_tokens=64), 64, 256, graphed_server=True)
    assert off.max_prefill_while_decoding == off.max_num_batched_tokens
    assert small.max_prefill_while_decoding == 64
