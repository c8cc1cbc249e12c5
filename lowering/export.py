"""What both lowerings (monolithic and piecewise) share to export a post-pass graph: the
example step it is traced with, which sizes stay dynamic, and how IR ops become inlined
references or in-graph kernel launches."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from kiln.errors import KilnError

# Example step for tracing: 7 tokens of 2 sequences over a cache of 3 blocks of 5 slots. Every
# size is >= 2 and distinct, so none is specialised or mistaken for another.
EXAMPLE_T, EXAMPLE_SEQS, EXAMPLE_BLOCKS, EXAMPLE_BLOCK_SIZE, EXAMPLE_TABLE_WIDTH = 7, 2, 3, 5, 4


def dynamic_dims(Dim, max_num_tokens: int) -> dict:
    """Only the step's sizes vary: tokens T, sequences B (B + 1 offsets), block-table width,
    and the KV cache's block count and block size. Weights and head sizes stay static."""
    t = Dim("T", min=1, max=max_num_tokens)
    b = Dim("B", min=1, max=4096)
    width, blocks, block_size = Dim("W", min=1), Dim("NB", min=1), Dim("BS", min=1, max=1024)
    per_token = {0: t}
    return {
        "input_ids": per_token,
        "positions": per_token,
        "attn_slot_mapping": per_token,
        "attn_block_tables": {0: b, 1: width},
        "attn_seq_lens": {0: b},
        "attn_query_start_loc": {0: b + 1},
        "kv_caches": {0: blocks, 1: block_size},
    }


def example_input(name: str, t: int, passed, seqs: int = EXAMPLE_SEQS):
    meta = next(n for n in passed.gm.graph.find_nodes(op="placeholder") if n.target == name)
    val = meta.meta["val"]
    device = next(iter(passed.weights.values())).device
    first = t if seqs == 1 else t // 2 + 1  # first sequence's query tokens; the second: the rest
    i32 = dict(dtype=torch.int32, device=device)
    if name in ("input_ids", "positions"):
        return torch.arange(t, device=device) % 3
    if name == "attn_slot_mapping":
        return torch.arange(t, device=device) % (EXAMPLE_BLOCKS * EXAMPLE_BLOCK_SIZE)
    if name == "attn_block_tables":
        table = torch.arange(seqs * EXAMPLE_TABLE_WIDTH, **i32) % EXAMPLE_BLOCKS
        return table.reshape(seqs, EXAMPLE_TABLE_WIDTH)
    if name == "attn_seq_lens":  # a single-token step decodes a sequence with history
        return torch.tensor([first, t - first][:seqs], **i32) + int(t == 1)
    if name == "attn_query_start_loc":
        return torch.tensor([0, first, t][: seqs + 1], **i32)
    if name.startswith("kv_caches_"):
        shape = [EXAMPLE_BLOCKS, EXAMPLE_BLOCK_SIZE, *[int(s) for s in val.shape[2:]]]
        return torch.zeros(shape, dtype=val.dtype, device=device)
    raise KilnError(f"lowering does not know how to build example input {name!r}")


# IR ops whose chosen implementation is their plain-torch reference are inlined before
# Inductor, so it generates (and fuses) code for them instead of calling back into Python.
# Ops whose definition says they stay calls (`OpDef.stays_call`: they write the KV cache, read
# tensor values on the host, or talk to other ranks) are not, unless their chosen kernel has
# an in-graph form (see `kernels_in_graph`).
def inline_references(ep, impls: dict[str, str]):
    """Decompose each inlinable IR op (chosen provider: reference) into its reference."""
    from ir.registry import get_op

    table = {
        get_op(op).overload: get_op(op).reference
        for op, provider in impls.items()
        if provider == "reference" and not get_op(op).stays_call
    }
    return ep.run_decompositions(table) if table else ep, sorted(o.name() for o in table)


@contextmanager
def kernels_in_graph(gm, impls: dict[str, str], launches: dict | None = None):
    """While exporting: calls of ops whose chosen kernel has an in-graph form
    (`ir.registry.Impl.in_graph`, e.g. a Triton launch through `wrap_triton`) call that form,
    so export traces the launch itself and AOTInductor compiles the kernel into the package.
    `attention_quant` without a fused kernel becomes that attention, then its quant reference.
    (A mutating op cannot be decomposed after export: it is wrapped as auto_functionalized.)
    Yields the rewritten ops' names; the graph is restored afterwards. `launches`, if given,
    receives {op: [kernel names launched, per traced call]}."""
    from ir.ops.fused import attention_then_quant
    from ir.registry import get_op

    forms: dict = {}
    log = {} if launches is None else launches
    for op, provider in impls.items():
        impl = next((i for i in get_op(op).impls if i.provider == provider), None)
        if impl is not None and impl.in_graph is not None:
            forms[get_op(op).overload.overloadpacket] = _recorded(op, impl.in_graph, log)
    attention = forms.get(get_op("attention").overload.overloadpacket)
    if attention is not None and impls.get("attention_quant") == "reference":

        def attention_quant_in_graph(*args):
            return attention_then_quant(attention, *args)

        packet = get_op("attention_quant").overload.overloadpacket
        forms[packet] = _recorded("attention_quant", attention_quant_in_graph, log)
    saved = {}
    for node in gm.graph.nodes:  # a call names the op (packet) or its overload
        packet = getattr(node.target, "overloadpacket", node.target)
        if node.op == "call_function" and packet in forms:
            saved[node] = node.target
            node.target = forms[packet]
    gm.recompile()
    try:
        yield sorted({getattr(t, "overloadpacket", t)._qualified_op_name for t in saved.values()})
    finally:
        for node, target in saved.items():
            node.target = target
        gm.recompile()


def _recorded(op: str, form, log: dict):
    """`form`, noting the kernels each traced call launches into log[op]."""
    from ir.kernels.base import recording_launches

    def call(*args, **kwargs):
        with recording_launches() as names:
            out = form(*args, **kwargs)
        log.setdefault(op, []).append(tuple(names))
        return out

    return call
