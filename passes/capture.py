"""Capture a Kiln decoder as an FX graph with a symbolic token count, and print it canonically.

Why `torch.export` (non-strict, training IR) and not `make_fx(tracing_mode="symbolic")`:
- export takes one named dynamic dimension, `Dim("T")`, with a sympy-backed range, and keeps
  every other size static; symbolic make_fx would make *every* input dimension (weights
  included) symbolic and leave us to pin them back one guard at a time.
- its training IR keeps `aten.linear` and our custom ops as single nodes and keeps the mutating
  `kiln.attention` as a plain in-place call (it only becomes `auto_functionalized` if the
  program is later decomposed), so patterns over IR ops stay one node each;
- parameters and buffers are lifted to placeholders named after their module path
  (`p_layers_0_mlp_down_proj_weight`), so the graph holds no baked weights, passes can swap
  weights (quantize, pad) by editing a name -> tensor table, and the graph text is
  weight-independent;
- `ep.graph_module` is a plain `GraphModule`: calling it with (weights..., inputs...) runs the
  IR op references eagerly (writing the KV caches in place), and Inductor accepts it later.
Non-strict mode traces the module in Python, which our decoder (no data-dependent control flow)
allows, and costs well under a second for the tiny test models.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import torch
from torch import fx

from model_defs.attn_metadata import AttnMetadata
from model_defs.decoder import DecoderForCausalLM
from passes import capture_layers

# Example token count for tracing: >= 2 so it is not specialised as 0/1, odd and unlike every
# weight dimension so no size is mistaken for it.
EXAMPLE_TOKENS = 7
USER_INPUTS = (
    "input_ids",
    "positions",
    "attn_slot_mapping",
    "attn_block_tables",
    "attn_seq_lens",
    "attn_query_start_loc",
)


@dataclass
class CapturedGraph:
    """A captured forward: the graph, its weights by placeholder name, and the LM head.

    Placeholders are weights (names in `weights`) or user inputs (`USER_INPUTS`, then
    `kv_caches_<layer>_<0|1>`). `lm_head` is kept apart because logits are computed outside
    the graph (`compute_logits`), yet padding the vocabulary is a pass's job.
    """

    gm: fx.GraphModule
    weights: dict[str, torch.Tensor]
    lm_head: torch.Tensor
    num_layers: int
    max_num_tokens: int


def _example_inputs(model: DecoderForCausalLM, num_tokens: int):
    cfg, device = model.cfg, model.embed_tokens.device
    ids = torch.arange(num_tokens, device=device) % cfg.vocab_size  # values do not matter
    positions = torch.arange(num_tokens, device=device)
    attn = AttnMetadata(
        slot_mapping=torch.arange(num_tokens, device=device),
        block_tables=torch.zeros((1, 1), dtype=torch.int32, device=device),
        seq_lens=torch.tensor([num_tokens], dtype=torch.int32, device=device),
        query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32, device=device),
    )
    kv_heads = cfg.num_kv_heads // model.par.tp_size
    shape = (1, num_tokens, kv_heads, cfg.head_dim)  # [blocks, block_size, Hk, D]
    dtype = model.embed_tokens.dtype
    kv = [
        (
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
        )
        for _ in range(cfg.num_layers)
    ]
    return ids, positions, attn, kv


def capture(model: DecoderForCausalLM, max_num_tokens: int = 8192) -> CapturedGraph:
    """Export `model.forward` with `T` (tokens in the step) dynamic in [1, max_num_tokens].

    The attention metadata's batch dimensions (block tables, seq_lens, query_start_loc) stay
    static in the fake values but nothing in the graph depends on them: only `kiln.attention`
    reads them, and its output shape is q's. So the graph runs for any batch size.

    A deep model is traced through four of its layers and the rest copied
    (`passes/capture_layers.py`): the same graph, its capture time independent of depth.
    """
    view = capture_layers.probe(model)
    if view is not None:
        gm, weights = _export(view, max_num_tokens)
        if capture_layers.extend(gm, weights, model):
            return _finish(gm, weights, model, max_num_tokens)
    return _finish(*_export(model, max_num_tokens), model, max_num_tokens)


def _export(model: DecoderForCausalLM, max_num_tokens: int):
    """(graph module, {weight placeholder: tensor}) of `torch.export` over `model`."""
    from torch.export import Dim, export

    t = Dim("T", min=1, max=max_num_tokens)
    args = _example_inputs(model, EXAMPLE_TOKENS)
    dynamic = ({0: t}, {0: t}, [{0: t}, None, None, None], [(None, None)] * len(args[3]))
    with torch.no_grad():
        ep = export(model, args, dynamic_shapes=dynamic, strict=False)
    sig = ep.graph_signature
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    gm = ep.graph_module
    gm.meta["kiln_ranges"] = {
        str(k): (int(v.lower), int(v.upper)) for k, v in ep.range_constraints.items()
    }
    return gm, {ph: state[fqn] for ph, fqn in names.items()}


def _finish(gm: fx.GraphModule, weights: dict, model: DecoderForCausalLM, max_num_tokens: int):
    # Logits are computed outside the graph, but which tensor is the head is part of it.
    gm.meta["kiln_head"] = "p_embed_tokens" if model.cfg.tie_word_embeddings else "lm_head"
    _drop_unused_placeholders(gm, weights)
    return CapturedGraph(gm, weights, model.lm_head_weight(), model.cfg.num_layers, max_num_tokens)


def _drop_unused_placeholders(gm: fx.GraphModule, weights: dict[str, torch.Tensor]) -> None:
    for node in list(gm.graph.find_nodes(op="placeholder")):
        if node.target in weights and not node.users:  # lm_head: used by compute_logits only
            gm.graph.erase_node(node)
            del weights[node.target]
    gm.recompile()


def graph_inputs(gm: fx.GraphModule) -> list[str]:
    return [n.target for n in gm.graph.find_nodes(op="placeholder")]


# ---------------------------------------------------------------------------------------------
# Canonical text: same bytes for the same model/config in any process, on any machine.


def _fmt_val(val, symbols: dict[str, str]) -> str:
    if isinstance(val, torch.Tensor):
        dims = ", ".join(_fmt_sym(d, symbols) for d in val.shape)
        return f"{str(val.dtype).removeprefix('torch.')}[{dims}]"
    if isinstance(val, (tuple, list)):
        return "(" + ", ".join(_fmt_val(v, symbols) for v in val) + ")"
    if isinstance(val, torch.SymInt):
        return f"sym {_fmt_sym(val, symbols)}"
    return type(val).__name__


def _fmt_sym(d, symbols: dict[str, str]) -> str:
    text = str(d)

    # Symbol names (s14, s77, u0) depend on torch internals: rename them by first appearance.
    def rename(m: re.Match) -> str:
        return symbols.setdefault(m.group(0), "T" if not symbols else f"S{len(symbols)}")

    return re.sub(r"\b[su]\d+\b", rename, text)


def _fmt_arg(arg, names: dict[fx.Node, str]) -> str:
    if isinstance(arg, fx.Node):
        return names[arg]
    if isinstance(arg, (list, tuple)):
        inner = ", ".join(_fmt_arg(a, names) for a in arg)
        return f"[{inner}]" if isinstance(arg, list) else f"({inner})"
    if isinstance(arg, float):
        return repr(arg)
    if isinstance(arg, torch.dtype):
        return str(arg).removeprefix("torch.")
    return repr(arg)


def canonical_text(gm: fx.GraphModule) -> str:
    """One line per node: `%3 = kiln.rms_norm(%2, p_norm, 1e-05) : float32[T, 64]`.

    Placeholders keep their (module-path) names; other nodes are numbered in graph order, so
    the text depends only on the graph's structure, shapes, dtypes and literal arguments.
    """
    from passes.graph import op_name

    names: dict[fx.Node, str] = {}
    symbols: dict[str, str] = {}
    lines = []
    for node in gm.graph.nodes:
        val = _fmt_val(node.meta.get("val"), symbols)
        if node.op == "placeholder":
            names[node] = node.target
            lines.append(f"input {node.target} : {val}")
        elif node.op == "output":
            lines.append(f"output {_fmt_arg(node.args[0], names)}")
        else:
            names[node] = f"%{len(names)}"
            args = ", ".join(_fmt_arg(a, names) for a in node.args)
            kwargs = "".join(f", {k}={_fmt_arg(v, names)}" for k, v in sorted(node.kwargs.items()))
            lines.append(f"{names[node]} = {op_name(node)}({args}{kwargs}) : {val}")
    if "kiln_head" in gm.meta:
        lines.append(f"head {gm.meta['kiln_head']}")
    lines += _symbol_ranges(gm, symbols)
    return "\n".join(lines) + "\n"


def _symbol_ranges(gm: fx.GraphModule, symbols: dict[str, str]) -> list[str]:
    """`range T in [1, 8192]`: the dynamic dimension's bounds are part of the graph's contract."""
    ranges = gm.meta.get("kiln_ranges", {})
    return [
        f"range {new} in [{ranges[old][0]}, {ranges[old][1]}]"
        for old, new in symbols.items()
        if old in ranges
    ]


def graph_hash(gm: fx.GraphModule) -> str:
    """sha256 of the canonical text: one factor of the compile-cache key."""
    return hashlib.sha256(canonical_text(gm).encode()).hexdigest()
