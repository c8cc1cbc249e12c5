"""Running a `plan` artifact: the lowered graph's entries, in order, over precompiled cubins.

`plan.json` (written by `lowering/plan.py`) lists per graph node what runs: a kernel body of
the IR registry bound to the cubin launcher (`runtime/cubin_launcher.py`; a Helion kernel's
body gets a runner that imports the plain Triton source stored in the artifact), a library or
reference callable of the registry, or a torch op / operator function by name. Everything is
resolved once at load into a flat list of steps (callable, arguments as slots of one list of
values, slots to free), so a step costs one Python call per node. Steps up to the token
budget replay CUDA graphs; the captures themselves, the warm-up and any larger step pay this
interpretation on the host, so it is kept lean: constant arguments get slots of their own, so
most entries read their arguments with one `itemgetter`, and torch ops are called through
their C++ handle.
Nothing here compiles: no Helion, no Inductor, no Triton JIT. In a process that permitted it
and has not imported Triton (`kiln serve`'s engine core), the kernel modules and the stored
sources are loaded host-only (`ir/host_triton.py`): their `@triton.jit` functions are
stand-ins the cubin launcher keys as it would Triton's, and Triton is never imported.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from compile_cache import Artifact
from compile_cache.formats import PLAN_FORMAT
from ir.host_triton import enter_host_only, host_builtins, host_only
from kiln.errors import KilnError
from runtime.launch_site import picker
from runtime.loaders.compiled import CompiledLoader

ALLOWED_MODULES = ("torch.ops.", "operator.", "math.")
LauncherFactory = Callable[[Path, list[str], torch.device], Callable]


def cubin_launcher(folder: Path, ids: list[str], device: torch.device) -> Callable:
    from runtime.cubin_launcher import CubinLauncher

    return CubinLauncher.from_folder(folder, ids, device)


class PlanLoader(CompiledLoader):
    """A `plan` artifact. `launcher_factory(kernels folder, cubin ids, device)` gives the
    launcher kernel bodies call; by default the cubin launcher (tests swap in Triton's
    interpreter to run a plan on the CPU)."""

    def __init__(self, artifact: Artifact, launcher_factory: LauncherFactory = cubin_launcher):
        super().__init__(artifact)
        self.launcher_factory = launcher_factory

    def calls_ops(self) -> bool:
        return False  # kernel bodies are called directly, never through the dispatcher

    def compiles_per_shape(self) -> bool:
        return False

    def load_program(self, device: torch.device) -> PlanProgram:
        root = Path(self.artifact.path)
        plan = json.loads((root / self.manifest["plan_file"]).read_text())
        if plan.get("format") != PLAN_FORMAT:
            raise KilnError(
                f"artifact {self.artifact.key[:12]} has plan format {plan.get('format')}, this "
                f"runtime reads {PLAN_FORMAT}: recompile it with this Kiln"
            )
        ids = [Path(p).stem for p in self.manifest["cubins"]]
        launcher = self.launcher_factory(root / "kernels", ids, device)
        return PlanProgram(
            plan, launcher, root / "kernels", device, self.manifest["target"]["name"]
        )


class PlanProgram:
    """The plan as a callable over the graph's inputs (in `plan["inputs"]` order)."""

    def __init__(self, plan: dict, launcher: Callable, sources: Path, device, target: str):
        from ir.registry import load_kernels

        enter_host_only()  # where permitted, the kernels' host code runs without Triton
        load_kernels()  # registers the kernel bodies
        self.target, self.device = target, torch.device(device)
        slots = {name: i for i, name in enumerate(plan["inputs"])}
        self.num_inputs = len(slots)
        self.steps: list[_Step] = []
        for entry in plan["entries"]:
            fn = self._callable(entry, launcher, sources)
            args = [self._decode(a, slots) for a in entry["args"]]
            kwargs = {k: self._decode(v, slots) for k, v in entry.get("kwargs", {}).items()}
            slots[entry["name"]] = len(slots)
            self.steps.append(_Step(entry["name"], fn, args, kwargs, slots[entry["name"]]))
        self.outputs = [self._decode(o, slots) for o in plan["outputs"]]
        self.num_slots = len(slots)
        _plan_frees(self.steps, self.outputs)
        constants: list = []  # they follow the nodes' slots in the values
        self.program = [step.compiled(self.num_slots, constants) for step in self.steps]
        self.blank = [None] * (self.num_slots - self.num_inputs) + constants

    def __call__(self, *inputs: torch.Tensor) -> tuple:
        from ir.targets import configs_for

        if len(inputs) != self.num_inputs:
            raise KilnError(f"the plan takes {self.num_inputs} inputs, it was given {len(inputs)}")
        values: list[Any] = [*inputs, *self.blank]
        with configs_for(self.target):  # bodies pick the configs their cubins were built with
            for fn, args_of, kwargs_of, slot, frees in self.program:
                if kwargs_of is None:
                    values[slot] = fn(*args_of(values))
                else:
                    values[slot] = fn(*args_of(values), **kwargs_of(values))
                for freed in frees:
                    values[freed] = None
        return tuple(_value(o, values) for o in self.outputs)

    def _callable(self, entry: dict, launcher: Callable, sources: Path) -> Callable:
        kind = entry["kind"]
        if kind in ("aten", "library", "python") and "op" not in entry:
            fn = resolve_callable(entry["target"])
            # An OpOverload's __call__ only forwards to its C++ handle: call that directly.
            return fn._op if isinstance(fn, torch._ops.OpOverload) else fn
        from ir.registry import get_op

        opdef = get_op(entry["op"])
        if kind == "reference":
            return opdef.reference
        impl = next((i for i in opdef.impls if i.provider == entry["provider"]), None)
        if impl is None:
            raise KilnError(
                f"the artifact runs kiln.{entry['op']} with its {entry['provider']} "
                "implementation, which this Kiln does not register: recompile it"
            )
        if kind == "library":
            return impl.fn
        if impl.body_takes == "runner":
            return impl.with_launcher(SourceRunner(entry["runs"], sources, launcher))
        return impl.with_launcher(launcher)

    def _decode(self, value: Any, slots: dict[str, int]) -> Any:
        """An encoded argument as a constant, or a `_Ref`/`_List` read from the values."""
        if isinstance(value, list):
            items = [self._decode(v, slots) for v in value]
            return _List(items) if any(isinstance(i, (_Ref, _List)) for i in items) else items
        if isinstance(value, dict):
            if "ref" in value:
                return _Ref(slots[value["ref"]])
            if "dtype" in value:
                return getattr(torch, value["dtype"])
            if "device" in value:
                return self.device
            if "memory_format" in value:
                return getattr(torch, value["memory_format"])
            if "layout" in value:
                return getattr(torch, value["layout"])
            raise KilnError(f"plan argument {value} is not understood by this runtime")
        return value


class _Ref:
    __slots__ = ("slot",)

    def __init__(self, slot: int):
        self.slot = slot


class _List:
    __slots__ = ("items",)

    def __init__(self, items: list):
        self.items = items


def _value(arg: Any, values: list) -> Any:
    if isinstance(arg, _Ref):
        return values[arg.slot]
    if isinstance(arg, _List):
        return [_value(a, values) for a in arg.items]
    return arg


class _Step:
    """One entry, resolved: the callable, its arguments as a template plus (position, slot)
    fills for references, and the slots whose last reader it is (freed after it runs)."""

    def __init__(self, name: str, fn: Callable, args: list, kwargs: dict, slot: int):
        self.name, self.fn, self.slot, self.arguments = name, fn, slot, args
        self.template = [a if not isinstance(a, (_Ref, _List)) else None for a in args]
        self.fills = [(i, a) for i, a in enumerate(args) if isinstance(a, (_Ref, _List))]
        self.kw = kwargs
        self.reads = {r for a in [*args, *kwargs.values()] for r in _slots(a)}
        self.frees: tuple[int, ...] = ()

    def compiled(self, first_constant: int, constants: list) -> tuple:
        """(fn, values -> args, values -> kwargs or None, slot, frees): what `__call__` runs.
        The arguments are read from the values by one getter, each constant from a slot of its
        own (appended to `constants`, from `first_constant` on), and a list of references by a
        getter of its own; lists within lists take the general reader (`args`)."""

        def slot_of(arg: Any) -> int:
            if isinstance(arg, _Ref):
                return arg.slot
            constants.append(arg)
            return first_constant + len(constants) - 1

        kwargs_of = self.kwargs if self.kw else None
        lists = [(i, a.items) for i, a in enumerate(self.arguments) if isinstance(a, _List)]
        if any(isinstance(item, _List) for _, items in lists for item in items):
            return self.fn, self.args, kwargs_of, self.slot, self.frees
        args_of = picker([slot_of(None if isinstance(a, _List) else a) for a in self.arguments])
        if lists:
            args_of = _WithLists(
                args_of, [(i, picker([slot_of(x) for x in xs])) for i, xs in lists]
            )
        return self.fn, args_of, kwargs_of, self.slot, self.frees

    def args(self, values: list) -> list:
        out = list(self.template)
        for i, a in self.fills:
            out[i] = values[a.slot] if isinstance(a, _Ref) else _value(a, values)
        return out

    def kwargs(self, values: list) -> dict:
        return {k: _value(v, values) for k, v in self.kw.items()} if self.kw else {}


class _WithLists:
    """A step's arguments where some are lists holding references: the rest by one getter,
    each list built by its own."""

    __slots__ = ("args_of", "lists")

    def __init__(self, args_of: Callable, lists: list[tuple[int, Callable]]):
        self.args_of, self.lists = args_of, lists

    def __call__(self, values: list) -> list:
        args = list(self.args_of(values))
        for position, items_of in self.lists:
            args[position] = list(items_of(values))
        return args


def _slots(arg: Any) -> set[int]:
    if isinstance(arg, _Ref):
        return {arg.slot}
    if isinstance(arg, _List):
        return {s for a in arg.items for s in _slots(a)}
    return set()


def _plan_frees(steps: list[_Step], outputs: list) -> None:
    """Give each step the slots it reads last (outputs are kept): a step's intermediates are
    released as soon as nothing reads them, as compiled code does."""
    kept = {s for o in outputs for s in _slots(o)}
    last: dict[int, int] = {}
    for index, step in enumerate(steps):
        for slot in step.reads:
            last[slot] = index
    by_step: dict[int, list[int]] = {}
    for slot, index in last.items():
        if slot not in kept:
            by_step.setdefault(index, []).append(slot)
    for index, step in enumerate(steps):
        step.frees = tuple(sorted(by_step.get(index, ())))


def resolve_callable(name: str) -> Callable:
    """A plan's callable by qualified name (`torch.ops.aten.linear.default`,
    `operator.getitem`); only torch ops, operator and math are looked up."""
    if not name.startswith(ALLOWED_MODULES):
        raise KilnError(f"the plan names {name!r}, which is not a torch op, operator or math call")
    module_name, _, attr_path = name.partition(".")
    if module_name == "torch":
        obj: Any = torch
        parts = attr_path.split(".")
    else:
        obj, parts = importlib.import_module(module_name), attr_path.split(".")
    try:
        for part in parts:
            obj = getattr(obj, part)
    except AttributeError:
        raise KilnError(f"this torch has no {name} (the plan needs it): recompile") from None
    return obj


class SourceRunner:
    """The runner given to a Helion kernel's body: runs the plain Triton source the artifact
    stored for (kernel function, config) with the plan's launcher."""

    def __init__(self, runs: list[dict], sources: Path, launcher: Callable):
        self.launcher = launcher
        self.entries = {
            (r["fn"], r["config"]): getattr(import_source(sources / f"{r['source']}.py"), r["entry"])
            for r in runs
        }  # fmt: skip
        # fn -> (the config object it last ran with, its entry). Bodies pass the pinned config
        # `load_config` caches, the same object every call: naming the pair costs a lookup.
        self.last: dict[Callable, tuple[dict, Callable]] = {}

    def __call__(self, fn: Callable, config: dict, *args: Any) -> Any:
        last = self.last.get(fn)
        if last is None or last[0] is not config:
            last = self.last[fn] = (config, self.entry(fn, config))
        return last[1](*args, _launcher=self.launcher)

    def entry(self, fn: Callable, config: dict) -> Callable:
        key = (f"{fn.__module__}.{fn.__qualname__}", json.dumps(config, sort_keys=True))
        entry = self.entries.get(key)
        if entry is None:
            known = ", ".join(f"{f} {c}" for f, c in self.entries) or "none"
            raise KilnError(
                f"kernel {key[0]} ran with config {key[1]}, but the artifact holds sources for "
                f"{known}: recompile it"
            )
        return entry


def import_source(path: Path) -> Any:
    """Import a stored plain Triton module (once per process). Compiled here rather than by the
    import system, so no `__pycache__` is written into the artifact; the code keeps the file's
    path, where the launcher (and Triton) read each kernel's source. In host-only mode
    (`ir/host_triton.py`) its `import triton` statements get the stand-ins, and Triton is not
    imported; otherwise, once its kernels are defined, its `triton` is `host_triton()`: the
    host code runs every step."""
    name = f"kiln_plan_{path.stem.replace('-', '_')}"
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    stand_ins = host_only()
    if stand_ins:
        module.__builtins__ = host_builtins()
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    if not stand_ins and isinstance(module.__dict__.get("triton"), types.ModuleType):
        module.triton = host_triton()
    return module


@functools.cache
def host_triton() -> types.ModuleType:
    """`triton` for host code where Triton is loaded: Triton's constexpr helpers
    (`next_power_of_2`, `cdiv`) as the plain functions they wrap, the rest as they are. Called
    from the host with ints they compute the same, without the ~5 µs each of turning their
    arguments from constexprs."""
    import triton

    try:
        from triton.runtime.jit import ConstexprFunction
    except ImportError:  # a Triton whose helpers are plain functions already
        return triton

    class HostTriton(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            value = getattr(triton, name)
            if isinstance(value, ConstexprFunction):
                value = value.fn
            setattr(self, name, value)  # looked up once
            return value

    return HostTriton("triton")
