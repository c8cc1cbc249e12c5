"""The launches of one jit function through the cubin launcher, with what they decide memoised.

Choosing a cubin afresh (`CubinTable.select`) reads every argument's type and specialization,
and packing ctypes values reads every parameter's kind: tens of µs of Python per launch. A
`LaunchSite` learns from its launches which argument positions hold tensors, which scalars
keep their value from launch to launch (strides, hidden sizes, block sizes: one tuple
comparison guards them all) and which vary (the token count and what derives from it). The
cubin chosen is memoised under a key of everything else the choice depends on: the varying
scalars' types and specializations (their values, for a constexpr parameter), the tensors'
dtypes and pointer alignment, the warps and stages. So every launch still gets the most
specialized cubin its own sizes allow, and a launch no cubin takes still fails in `select`.
Launch code passes the same Python type at a position each time (a guarded value compares
equal across int, float and bool).

Each cubin's parameters live in one buffer (`Packed`), built once per site layout, whose
pointer and varying slots a single `struct.pack_into` rewrites per launch; constant slots are
written once. The driver copies the parameters when the launch is made, so reusing the buffer
is safe and a captured CUDA graph keeps the values it was given. A site is not thread-safe: the
engine launches from one thread.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch

from compile_cache.triton_abi import DIVISIBILITY, arg_type
from kiln.errors import KilnError

_SLOT = 8  # bytes per parameter slot: every kernel parameter is at most 8 bytes
# struct format of each scalar parameter kind (packed little-endian, no implicit padding)
_FORMATS = {"i1": "b", "u1": "B", "i8": "b", "u8": "B", "i16": "h", "u16": "H", "i32": "i",
            "u32": "I", "i64": "q", "u64": "Q", "fp32": "f", "fp64": "d"}  # fmt: skip
# Slot groups, in their order in the buffer: the first three are rewritten per launch.
_TENSOR, _VARYING, _SCRATCH, _CONSTANT = range(4)
_data_ptr = torch.Tensor.data_ptr  # TypeError on anything but a tensor
_dtype = operator.attrgetter("dtype")
_MASK = DIVISIBILITY - 1  # a pointer's low bits: 0 when it is aligned


def picker(positions: Sequence[int]) -> Callable[[Sequence], tuple]:
    """`args -> tuple(args[i] for i in positions)`, in C where it can be."""
    if not positions:
        return lambda args: ()
    if len(positions) == 1:
        (only,) = positions
        return lambda args: (args[only],)
    return operator.itemgetter(*positions)


def _exact(value: Any) -> tuple:
    return type(value), value


def _slot_format(kind: str) -> str:
    """An 8-byte slot holding a parameter of `kind` (a pointer for `*...`)."""
    fmt = "Q" if kind.startswith("*") else _FORMATS[kind]
    pad = _SLOT - struct.calcsize("<" + fmt)
    return fmt + (f"{pad}x" if pad else "")


def _param_slots(meta: dict, params: Sequence, args: Sequence, tensor_at: Sequence[int],
                 varying_at: Sequence[int]) -> list[tuple]:  # fmt: skip
    """(group, kind, argument position or scratch kind, value) of each kernel parameter of the
    cubin `meta`, in order: every argument that is no constant, then the scratch pointers the
    build's Triton appends (0 for none)."""
    slots = []
    for i, (param, value) in enumerate(zip(params, args, strict=True)):
        kind = meta["signature"][param.name]
        if param.is_constexpr or kind == "constexpr":
            continue
        if not kind.startswith("*") and kind not in _FORMATS:
            raise KilnError(f"kernel {meta['id']}: cannot pass a {kind} parameter")
        group = _TENSOR if i in tensor_at else _VARYING if i in varying_at else _CONSTANT
        slots.append((group, kind, i, value))
    for kind in meta["scratch_params"]:
        grows = meta[f"{kind}_scratch_size"] != 0
        slots.append((_SCRATCH if grows else _CONSTANT, "*i8", kind, 0))
    assert sum(s[0] == _TENSOR for s in slots) == len(tensor_at), "every tensor is a pointer"
    return slots


class Packed:
    """The parameter buffer of one cubin at one site. The kernel's parameters point, in
    order, at 8-byte slots laid out by group: tensors' pointers, varying scalars, scratch
    pointers sized by the grid (rewritten per launch, in that order), then the constants."""

    def __init__(self, meta: dict, function: int, params: Sequence, args: Sequence,
                 tensor_at: Sequence[int], varying_at: Sequence[int]):  # fmt: skip
        slots = _param_slots(meta, params, args, tensor_at, varying_at)
        memory = sorted(range(len(slots)), key=lambda k: slots[k][0])  # stable: kernel order
        self.buffer = (ctypes.c_uint64 * max(len(slots), 1))()
        base, where = ctypes.addressof(self.buffer), {k: n for n, k in enumerate(memory)}
        self.params = (ctypes.c_void_p * max(len(slots), 1))(
            *[base + _SLOT * where[k] for k in range(len(slots))]
        )
        self.params_address = ctypes.addressof(self.params)
        dynamic = [slots[k] for k in memory if slots[k][0] != _CONSTANT]
        constant = [slots[k] for k in memory if slots[k][0] == _CONSTANT]
        self.pack = struct.Struct("<" + "".join(_slot_format(s[1]) for s in dynamic))
        fixed = struct.Struct("<" + "".join(_slot_format(s[1]) for s in constant))
        fixed.pack_into(self.buffer, _SLOT * len(dynamic), *[s[3] for s in constant])
        self.varying_of = picker([s[2] for s in dynamic if s[0] == _VARYING])
        self.scratch = [s[2] for s in dynamic if s[0] == _SCRATCH]
        self.meta, self.function = meta, function
        self.block, self.shared = 32 * meta["num_warps"], meta["shared"]


class LaunchSite:
    """The launches of one jit function through `launcher` (see the module docstring)."""

    def __init__(self, launcher, fn):
        self.launcher, self.fn = launcher, fn
        self.driver, self.device_index = launcher.driver, launcher.device_index
        self.tensor_at: tuple[int, ...] | None = None  # None: nothing learned yet
        self.fixed_at: tuple[int, ...] = ()
        self.varying_at: tuple[int, ...] = ()
        self.fixed: tuple | None = None
        self.tensors_of = self.fixed_of = self.varying_of = picker(())
        self.feature: Callable[[Any], Any] = arg_type
        self.chosen: dict[tuple, Packed] = {}  # key -> the cubin chosen, packed
        self.packed: dict[str, Packed] = {}  # cubin id -> its buffer, in this layout

    def __call__(self, grid: Sequence[int], args: tuple, num_warps: int, num_stages: int) -> None:
        found = self.key(args, num_warps, num_stages)
        packed = None if found is None else self.chosen.get(found[0])
        if packed is None:
            packed, found = self.choose(args, num_warps, num_stages)
        x, y, z = (*grid, 1, 1)[:3]
        if not (x and y and z):
            return
        dynamic = (*found[1], *packed.varying_of(args))
        if packed.scratch:
            grown = self.launcher.scratch_ptr
            dynamic += tuple(grown(packed.meta, kind, (x, y, z)) for kind in packed.scratch)
        packed.pack.pack_into(packed.buffer, 0, *dynamic)
        stream = self.driver.current_stream(self.device_index)
        self.driver.launch(packed.function, x, y, z, packed.block, packed.shared, stream,
                           packed.params_address)  # fmt: skip

    def key(self, args: tuple, num_warps: int, num_stages: int) -> tuple[tuple, tuple] | None:
        """(memo key of this launch, its tensors' pointers); None when the learned layout
        does not hold (a guarded scalar changed, or a tensor position holds something else)."""
        if self.fixed_of(args) != self.fixed:
            return None
        tensors = self.tensors_of(args)
        try:
            pointers = tuple(map(_data_ptr, tensors))
        except TypeError:
            return None
        varying = tuple(map(self.feature, self.varying_of(args)))
        dtypes = tuple(map(_dtype, tensors))
        # Every pointer aligned (the usual case, one C loop): (); else each one's misalignment.
        misaligned = ()
        if functools.reduce(operator.or_, pointers, 0) & _MASK:
            misaligned = tuple(map(_MASK.__and__, pointers))
        return (num_warps, num_stages, dtypes, misaligned, varying), pointers

    def choose(self, args: tuple, num_warps: int, num_stages: int) -> tuple[Packed, tuple]:
        """Choose the cubin afresh (KilnError when none takes the launch), learn from the
        arguments, and memoise the choice under the launch's key."""
        meta, params = self.launcher.table.select(self.fn, args, num_warps, num_stages)
        self.learn(args, params)
        found = self.key(args, num_warps, num_stages)
        assert found is not None, "the layout just learned holds for the launch it came from"
        packed = self.packed.get(meta["id"])
        if packed is None:
            function = self.launcher.functions[meta["id"]]
            packed = Packed(meta, function, params, args, self.tensor_at, self.varying_at)
            self.packed[meta["id"]] = packed
        self.chosen[found[0]] = packed
        return packed, found

    def learn(self, args: tuple, params: Sequence) -> None:
        """Update the layout: scalars that changed since they were guarded become varying
        (the memo and buffers then start over); a new set of tensor positions starts over."""
        tensor_at = tuple(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
        if tensor_at == self.tensor_at:
            changed = {i for i, v in zip(self.fixed_at, self.fixed, strict=True) if args[i] != v}
            if not changed:
                return
            fixed_at = tuple(i for i in self.fixed_at if i not in changed)
            varying_at = tuple(sorted({*self.varying_at, *changed}))
        else:
            fixed_at, varying_at = tuple(i for i in range(len(args)) if i not in tensor_at), ()
        self.tensor_at, self.fixed_at, self.varying_at = tensor_at, fixed_at, varying_at
        self.tensors_of, self.fixed_of = picker(tensor_at), picker(fixed_at)
        self.varying_of = picker(varying_at)
        self.fixed = self.fixed_of(args)
        exact = any(params[i].is_constexpr for i in varying_at)  # its value picks the cubin
        self.feature = _exact if exact else arg_type
        self.chosen, self.packed = {}, {}
