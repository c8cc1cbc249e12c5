"""The execution plan: the post-pass graph as data, and every kernel launch it makes.

`build_plan` walks the lowered graph in order over *meta* tensors (shapes, strides and
storage offsets, no data) for an example step whose token count is odd and above 1, so no
per-step size becomes a kernel constant. Each node becomes one plan entry:

- a kiln op whose chosen implementation is a Triton or Helion kernel: `kernel`. Its registered
  body runs with a recording launcher (a Helion body's runner first takes the kernel's plain
  Triton source at these shapes, token count dynamic); the launches are compiled to cubins
  by `lowering/plan_kernels.py`, and the entry names the kernels it launches;
- a kiln op that runs a library call (`torch._scaled_mm`) or its reference: `library` or
  `reference` (the runtime calls the registry's callable);
- any other call (`torch.ops.aten.*`, `operator.getitem`): recorded by its qualified name.
  A GEMM (`aten.linear`, `aten.mm`, ...) is marked `library` (cuBLAS picks its kernel on the
  target at run time).

Arguments are encoded as JSON: `{"ref": node}` for a value an earlier entry or an input made,
`{"dtype": "bfloat16"}`, `{"device": null}` (whatever device the step runs on), lists and
plain scalars as themselves. The runtime (`runtime/loaders/plan.py`) resolves all of it once
at load.

A `Recording` says where the launches go as they are recorded (a `CubinPool` compiles them
at once) and where Helion sources come from; a look-ahead walk (`Recording.look_ahead`) runs
no Helion kernel, so it hands out every Triton launch, and asks for every Helion source,
before the plan's own walk waits for the first source (`lowering/plan_artifact.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from compile_cache.formats import PLAN_FORMAT
from kiln.errors import KilnError
from lowering.cross import Launch

# The step the plan is recorded on: 13 tokens (odd, above 1, not a multiple of 16) of 3
# sequences; the KV cache has 11 blocks of the engine's block size and block tables 5 wide.
EXAMPLE_TOKENS = 13
EXAMPLE_SEQS, EXAMPLE_BLOCKS, EXAMPLE_TABLE_WIDTH = 3, 11, 5

GEMMS = {"aten.linear.default", "aten.mm.default", "aten.addmm.default", "aten.bmm.default"}
# Modules a plan may name a callable from; anything else is refused when the plan is built.
ALLOWED_MODULES = ("torch.ops.", "operator.", "math.")


@dataclass
class RecordedLaunch:
    """One kernel launch made by a plan entry, on the example step's meta tensors."""

    node: str
    launch: Launch
    module: str  # the module that defines the @triton.jit function


@dataclass(frozen=True)
class Recording:
    """How `build_plan` hands out what it records: `on_launch(launch)` for each kernel launch
    (a `CubinPool` starts compiling it), and where a Helion kernel's plain source comes from:
    `plain_source(fn, config_json, shape_key)` (a `lowering.helion_sources.SourceWorker`, or
    by default generated in this process).

    A `look_ahead` walk runs no Helion kernel: its source is only asked for, through
    `request(fn, config_json, shape_key)` when given (answered later), and its outputs are
    the op's fake implementation's. It waits for nothing, so every Triton kernel's launch is
    handed out (and compiling) before the real walk waits for its first Helion source."""

    on_launch: Callable[[RecordedLaunch], None] | None = None
    plain_source: Callable | None = None
    look_ahead: bool = False
    request: Callable | None = None


@dataclass
class PlanBuild:
    """What `build_plan` returns: the plan (JSON-ready), the launches to compile, and the
    plain sources Helion kernels ran from ({source id: source text}); `recording` is how the
    launches and sources were handed out while it was built."""

    plan: dict
    launches: list[RecordedLaunch] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    recording: Recording = field(default_factory=Recording)


def build_plan(
    passed,
    impls: dict[str, str],
    target,
    block_size: int,
    tokens: int = EXAMPLE_TOKENS,
    recording: Recording = Recording(),
) -> PlanBuild:
    """The plan of `passed.gm` for `target`, recorded on a step of `tokens` tokens."""
    from ir.targets import configs_for

    gm = passed.gm
    plan = {"format": PLAN_FORMAT, "inputs": [], "entries": [], "outputs": []}
    build = PlanBuild(plan=plan, recording=recording)
    values: dict[fx.Node, Any] = {}
    inputs = example_inputs(passed, tokens, block_size)
    with configs_for(target.name), torch.inference_mode():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                build.plan["inputs"].append(node.target)
                values[node] = inputs[node.target]
            elif node.op == "call_function":
                entry, values[node] = _entry(node, values, impls, build)
                build.plan["entries"].append(entry)
            elif node.op == "output":
                build.plan["outputs"] = encode(node.args[0])
            else:
                raise KilnError(
                    f"plan lowering cannot run graph node {node.name} ({node.op} "
                    f"{node.target}); only placeholders and function calls are supported"
                )
    return build


def example_inputs(passed, tokens: int, block_size: int) -> dict[str, torch.Tensor]:
    """Meta tensors for every placeholder: weights as they are, step inputs at `tokens`."""
    meta = dict(device="meta")
    step = {
        "input_ids": torch.empty(tokens, dtype=torch.int64, **meta),
        "positions": torch.empty(tokens, dtype=torch.int64, **meta),
        "attn_slot_mapping": torch.empty(tokens, dtype=torch.int64, **meta),
        "attn_block_tables": torch.empty(
            EXAMPLE_SEQS, EXAMPLE_TABLE_WIDTH, dtype=torch.int32, **meta
        ),
        "attn_seq_lens": torch.empty(EXAMPLE_SEQS, dtype=torch.int32, **meta),
        "attn_query_start_loc": torch.empty(EXAMPLE_SEQS + 1, dtype=torch.int32, **meta),
    }
    out = {}
    for node in passed.gm.graph.find_nodes(op="placeholder"):
        name, val = node.target, node.meta.get("val")
        if name in passed.weights:
            out[name] = passed.weights[name].to("meta")
        elif name in step:
            out[name] = step[name].to(val.dtype) if val is not None else step[name]
        elif name.startswith("kv_caches_"):
            shape = [EXAMPLE_BLOCKS, block_size, *[int(s) for s in val.shape[2:]]]
            out[name] = torch.empty(shape, dtype=val.dtype, **meta)
        else:
            raise KilnError(f"plan lowering does not know graph input {name!r}")
    return out


def _entry(node: fx.Node, values: dict, impls: dict[str, str], build: PlanBuild) -> tuple:
    """(plan entry, meta value) of one call node."""
    args = fx.node.map_arg(node.args, lambda n: values[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
    name = callable_name(node.target)
    entry = {"name": node.name, "target": name, "args": encode(node.args)}
    if node.kwargs:
        entry["kwargs"] = encode(node.kwargs)
    if name.startswith("torch.ops.kiln."):
        op = name.split(".")[3]
        return _kiln_entry(entry, op, impls[op], args, kwargs, build)
    entry["kind"] = "library" if name.removeprefix("torch.ops.") in GEMMS else "aten"
    if not name.startswith("torch.ops."):
        entry["kind"] = "python"
    return entry, node.target(*args, **kwargs)


def _kiln_entry(entry: dict, op: str, provider: str, args, kwargs, build: PlanBuild) -> tuple:
    from ir.registry import get_op

    opdef = get_op(op)
    entry.update(op=op, provider=provider)
    if kwargs:
        raise KilnError(f"kiln.{op} is called with keyword arguments {sorted(kwargs)}")
    impl = next(i for i in opdef.impls if i.provider == provider)
    if impl.body is None:
        entry["kind"] = "reference" if provider == "reference" else "library"
        return entry, opdef.overload(*args)  # the fake implementation, on meta tensors
    entry["kind"], entry["runs"] = "kernel", []
    first = len(build.launches)
    launcher = _recorder(entry["name"], build)
    if impl.body_takes == "runner" and build.recording.look_ahead:
        try:
            impl.with_launcher(_request_only(build.recording.request))(*args)
        except _Requested:
            pass
        return entry, opdef.overload(*args)
    if impl.body_takes == "runner":
        out = impl.with_launcher(_HelionRecorder(launcher, entry["runs"], build))(*args)
    else:
        out = impl.with_launcher(launcher)(*args)
    entry["launches"] = list(range(first, len(build.launches)))
    if not entry["launches"]:
        raise KilnError(f"kiln.{op} ({provider}) launched no kernel on the example step")
    return entry, out


def _recorder(node: str, build: PlanBuild) -> Callable:
    def launch(fn, grid, *args, num_warps, num_stages, **kwargs):
        if kwargs:
            raise NotImplementedError(f"launch options {sorted(kwargs)} are not recorded")
        if callable(grid):
            raise NotImplementedError(f"{fn.__name__}: a callable grid is not recorded")
        module = fn.fn.__module__
        rec = RecordedLaunch(node, Launch(fn, tuple(grid), args, num_warps, num_stages), module)
        build.launches.append(rec)
        if build.recording.on_launch is not None:
            build.recording.on_launch(rec)

    return launch


class _Requested(Exception):
    """Ends a Helion body in a look-ahead walk at its first kernel run."""


def _request_only(request: Callable | None) -> Callable:
    """A look-ahead walk's Helion runner: asks for the kernel's source, runs nothing."""

    def run(fn: Callable, config: dict, *args: Any) -> Any:
        from ir.kernels.helion_util import _shape_key

        if request is not None:
            request(fn, json.dumps(config, sort_keys=True), _shape_key(args))
        raise _Requested

    return run


class _HelionRecorder:
    """The runner given to a Helion body while recording: takes the kernel's plain Triton
    source for these argument shapes (token count dynamic) and runs its host function with
    the recording launcher. Notes in `runs` which source ran, for the runtime's runner."""

    def __init__(self, launcher: Callable, runs: list, build: PlanBuild):
        self.launcher, self.runs, self.build = launcher, runs, build

    def __call__(self, fn: Callable, config: dict, *args: Any) -> Any:
        from ir.kernels.base import load_source
        from ir.kernels.helion_util import _plain_for_args, _shape_key

        config_json = json.dumps(config, sort_keys=True)
        generate = self.build.recording.plain_source or _plain_for_args
        plain = generate(fn, config_json, _shape_key(args))
        source_id = "src-" + hashlib.sha256(plain.source.encode()).hexdigest()[:16]
        self.build.sources[source_id] = plain.source
        run = {"fn": f"{fn.__module__}.{fn.__qualname__}", "config": config_json,
               "source": source_id, "entry": plain.entry}  # fmt: skip
        if any(r["fn"] == run["fn"] and r["config"] == config_json for r in self.runs):
            raise NotImplementedError(f"{run['fn']} runs twice in one op with one config")
        self.runs.append(run)
        return getattr(load_source(plain.source), plain.entry)(*args, _launcher=self.launcher)


def callable_name(target: Any) -> str:
    """The qualified name a plan records for a call target; KilnError if it cannot be named."""
    if isinstance(target, torch._ops.OpOverload):
        name = f"torch.ops.{target}"
    else:
        module = {"_operator": "operator"}.get(target.__module__, target.__module__)
        name = f"{module}.{target.__qualname__}"
    if not name.startswith(ALLOWED_MODULES):
        raise KilnError(
            f"the plan cannot name {target!r} ({name}); a plan calls only torch ops, "
            f"operator and math functions"
        )
    return name


def encode(value: Any) -> Any:
    """A node argument as JSON (see the module docstring)."""
    if isinstance(value, fx.Node):
        return {"ref": value.name}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": None}  # the graph was captured on the model's device: the step's
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    raise KilnError(f"the plan cannot record argument {value!r} ({type(value).__name__})")


def count_ops(plan: dict) -> dict[str, int]:
    """{IR op: entries} in a plan."""
    counts: dict[str, int] = {}
    for e in plan["entries"]:
        if "op" in e:
            counts[e["op"]] = counts.get(e["op"], 0) + 1
    return counts
