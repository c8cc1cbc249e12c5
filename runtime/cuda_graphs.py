"""CUDA graphs for every step: capture one graph per token-count bucket, replay it each step.

A step of a small batch is hundreds of tiny kernels whose launch overhead dwarfs their work
(Helion/Triton kernels cost ~10 us of host time each). That holds for the steps that carry a
newly arrived prompt beside running decodes too: run eagerly, such a step costs several decode
steps, and every stream in the batch waits for it. So every step up to `max_num_tokens` tokens
replays a graph.

Graphs are keyed by the step's token count T, padded up to the next bucket (powers of two,
`max_batch_size` and `max_num_tokens`). A bucket of T tokens holds up to
S = min(T, max_batch_size) sequences, each with any number of query tokens: a decode batch,
a prefill (or a chunk of one), or both mixed. This works because the paged attention kernel
runs one program per (query token, head) and finds its sequence by binary search over
query_start_loc, so its launch grid depends on T alone. A step's inputs are copied into static
buffers that the graph reads (one host-to-device copy, `StaticStepInputs`), and the padding
is made harmless by construction:

- padding tokens: slot_mapping = -1 (their K/V is never written to the cache), ids and
  positions 0;
- padding sequences: seq_lens = 0 and query_start_loc repeating the last real offset, so they
  own no query rows; the attention kernel gives tokens past the last offset no keys (their
  output is zero); their block_table rows keep an earlier step's block ids (valid indices
  that nothing reads back);
- logits_indices past the real ones point at row 0: S logits rows are computed and the padding
  ones dropped.

Every graph shares one memory pool and they are captured largest first, so the smaller graphs
reuse the largest one's intermediate memory (only one graph ever runs at a time). A step with
more than `max_num_tokens` tokens or a block table longer than `max_blocks_per_seq` runs
eagerly.

Capture needs an attention op that never reads tensors on the host. The IR reference of
`kiln.attention` (and of the fused `attention_quant`) loops over sequences with `int(tensor)`,
a device sync that is illegal during capture, so graphs run only with a capturable
implementation. With attention_provider="triton" (or "helion") the forward's own attention is
trusted to be one (an artifact lowered to the kernel, or the eager module after
`ir.registry.bind_for("cuda")` bound the Triton kernel to CUDA). With "reference", warm-up and
capture run under a dispatch mode that routes those ops to the capturable implementation the
IR registry holds (`ir.registry.capture_routes`: the Triton attention kernel); that is also
harmless when the kernel is already bound.
Without the kernel, the runner stays eager and logs why, once.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from model_defs.attn_metadata import AttnMetadata
from model_defs.kv_cache import KVCaches
from model_defs.step_inputs import (
    StepLayout,
    StepSeq,
    host_buffer,
    prepare_inputs,
    step_counts,
    write_step,
)

log = logging.getLogger("kiln.runtime")

CAPTURABLE_ATTENTION = ("triton", "helion")  # providers whose attention never syncs the host


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself: (1, 2, 4, ..., max)."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch_size)


@dataclass(frozen=True)
class CUDAGraphConfig:
    """Which steps get a graph: up to `max_num_tokens` tokens (the scheduler's
    max_num_batched_tokens; default `max_batch_size`, decode batches only) of up to
    `max_batch_size` sequences (max_num_seqs), each of up to `max_blocks_per_seq` KV blocks
    (ceil(max_model_len / block_size))."""

    max_batch_size: int
    max_blocks_per_seq: int
    enforce_eager: bool = False
    max_num_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_blocks_per_seq", "max_num_tokens"):
            value = getattr(self, name)
            if name == "max_num_tokens" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CUDAGraphConfig.{name}={value!r} must be an integer >= 1")

    @property
    def token_capacity(self) -> int:
        return max(self.max_num_tokens or self.max_batch_size, self.max_batch_size)

    @property
    def buckets(self) -> tuple[int, ...]:
        """Token counts with a graph: powers of two, max_batch_size and max_num_tokens."""
        sizes = set(batch_buckets(self.token_capacity)) | {self.max_batch_size}
        return tuple(sorted(sizes))

    def seqs(self, bucket: int) -> int:
        """How many sequences the graph of `bucket` tokens holds."""
        return min(bucket, self.max_batch_size)


class StaticStepInputs:
    """The device memory every captured graph reads. One byte buffer holds a step laid out
    for its bucket (`StepLayout` of `bucket` tokens and S = seqs(bucket) sequence and logits
    rows), so one host-to-device copy fills it; only one graph runs at a time, so every
    bucket's layout starts at the same address. The block table the graphs read is a separate
    [max_batch_size, max_blocks_per_seq] tensor: each step's copy carries only its own rows'
    blocks (at the buffer's tail), and one device copy puts them into that table's corner."""

    def __init__(self, config: CUDAGraphConfig, device: torch.device):
        self.config, self.device = config, device
        s, blocks = config.max_batch_size, config.max_blocks_per_seq
        self.block_tables = torch.zeros((s, blocks), dtype=torch.int32, device=device)
        size = max(self._layout(b, s, blocks).nbytes for b in config.buckets)
        self.buffer = torch.zeros(size, dtype=torch.uint8, device=device)

    def _layout(self, bucket: int, rows: int, cols: int) -> StepLayout:
        s = self.config.seqs(bucket)
        return StepLayout(bucket, s, s, rows, cols)

    def pad(self, bucket: int) -> None:
        """Fill `bucket`'s layout with padding rows only (a step of no sequence), to warm up
        and capture its graph on: running it writes no KV."""
        self.fill([], 1, bucket)

    def views(self, bucket: int) -> tuple[torch.Tensor, torch.Tensor, AttnMetadata, torch.Tensor]:
        """input_ids, positions, attention metadata and logits rows of a `bucket`-token step."""
        inp = self._layout(bucket, 0, 0).inputs(self.buffer)
        a = inp.attn
        s = self.config.seqs(bucket)
        attn = AttnMetadata(a.slot_mapping, self.block_tables[:s], a.seq_lens, a.query_start_loc)
        return inp.input_ids, inp.positions, attn, inp.logits_indices

    def fill(self, batch: Sequence[StepSeq], block_size: int, bucket: int) -> int:
        """Copy a step in, padded to `bucket` tokens and that bucket's sequence rows (see the
        module docstring for why each padding value is harmless); returns its logits rows.
        Table rows past the step's sequences and columns past its longest table keep earlier
        steps' block ids: valid indices that no query reads (a sequence reads only the blocks
        of its seq_len, a padding sequence none)."""
        _, logits, blocks = step_counts(batch)
        layout = self._layout(bucket, len(batch), blocks)
        host = host_buffer(layout.nbytes, self.device)
        write_step(batch, block_size, layout, host.numpy())
        self.buffer[: layout.nbytes].copy_(host, non_blocking=True)
        table = self.buffer[layout.table_offset : layout.nbytes].view(torch.int32)
        if batch:
            self.block_tables[: len(batch), :blocks].copy_(table.view(len(batch), blocks))
        return logits


class _RouteOps(TorchDispatchMode):
    """Sends each op in `routes` to its replacement (same signature); all others run unchanged."""

    def __init__(self, routes: dict[object, Callable]):
        super().__init__()
        self.routes = routes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.routes.get(func, func)(*args, **(kwargs or {}))


def capturable_routes() -> dict[object, Callable]:
    """Capturable stand-ins, from the IR registry, for the ops whose references sync with the
    host (`attention` -> its Triton kernel) and for ops that stay calls (`attention_quant`
    runs its spec with the routed attention inside)."""
    from ir.registry import capture_routes

    mode: list[_RouteOps] = []

    def reenter(reference: Callable) -> Callable:
        def routed(*args, **kwargs):
            with mode[0]:  # the ops the reference calls are routed too
                return reference(*args, **kwargs)

        return routed

    routes = capture_routes(reenter)
    mode.append(_RouteOps(routes))
    return routes


def _uncapturable() -> str | None:
    """Why routing cannot make the eager forward capturable, or None."""
    from ir.registry import uncapturable_ops

    missing = uncapturable_ops()
    if missing:
        return f"no capturable implementation is registered for {', '.join(missing)}"
    return None


def graphs_unavailable_reason(config: CUDAGraphConfig, device: torch.device,
                              attention_provider: str) -> str | None:  # fmt: skip
    """Why steps can't use CUDA graphs here, or None when they can."""
    if config.enforce_eager:
        return "enforce_eager is set"
    if device.type != "cuda":
        return f"the device is {device.type}; CUDA graphs need a CUDA device"
    if attention_provider in CAPTURABLE_ATTENTION:
        return None
    if attention_provider != "reference":
        return f"attention provider {attention_provider!r} is not known to be capturable"
    why = _uncapturable()
    if why is not None:
        return f"the reference attention syncs with the host (.item()) and {why}"
    return None


class CUDAGraphRunner:
    """Runs a step: a captured graph when the step fits a bucket, eagerly otherwise.

    `forward(input_ids, positions, attn, kv_caches) -> hidden [T, H]` and
    `compute_logits(hidden [N, H]) -> [N, V]` are the model runner's; `attention_provider` is
    the implementation `forward` uses for `kiln.attention` ("reference" for the eager module).
    Call `capture()` once (after the KV cache is allocated), then `execute()` every step.

    Each bucket runs once outside capture before it is captured, because JIT kernels (Triton,
    Inductor's jit path) compile on a new shape and compiling cannot be captured. A forward
    whose every kernel was built ahead of time (an AOTInductor package calling no JIT kernel)
    passes `warm_every_bucket=False`: only the first, largest bucket then runs outside capture,
    which is enough to load its kernels and set up cuBLAS for the shared capture stream.
    """

    def __init__(self, forward: Callable, compute_logits: Callable, kv_caches: KVCaches,
                 config: CUDAGraphConfig, device: torch.device | str, *,
                 attention_provider: str = "reference", warm_every_bucket: bool = True):  # fmt: skip
        self.forward, self.compute_logits, self.kv_caches = forward, compute_logits, kv_caches
        self.config, self.device = config, torch.device(device)
        self.attention_provider = attention_provider
        self.warm_every_bucket = warm_every_bucket
        self.bucket_seconds: dict[int, float] = {}  # bucket -> seconds to warm up and capture
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}  # bucket -> static logits [seqs(bucket), V]
        self.static: StaticStepInputs | None = None
        self.capture_seconds = 0.0
        self.disabled_reason = graphs_unavailable_reason(config, self.device, attention_provider)
        if self.disabled_reason is not None:
            level = logging.WARNING if self.device.type == "cuda" and not config.enforce_eager else logging.INFO  # fmt: skip
            log.log(level, "CUDA graphs off, steps run eagerly: %s", self.disabled_reason)

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every bucket, largest first, into one shared pool; returns the seconds taken."""
        if not self.enabled or self.graphs:
            return self.capture_seconds
        t0 = time.perf_counter()
        cfg = self.config
        self.static = StaticStepInputs(cfg, self.device)
        pool = torch.cuda.graph_pool_handle()
        with self._capturable_attention():
            for i, bucket in enumerate(sorted(cfg.buckets, reverse=True)):
                t1 = time.perf_counter()
                self._capture_one(bucket, pool, warm_up=self.warm_every_bucket or i == 0)
                self.bucket_seconds[bucket] = time.perf_counter() - t1
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - t0
        log.info("captured %d CUDA graphs in %.2f s (seconds per bucket: %s)",
                 len(self.graphs), self.capture_seconds,
                 {b: round(s, 3) for b, s in self.bucket_seconds.items()})  # fmt: skip
        return self.capture_seconds

    def _capture_one(self, bucket: int, pool, warm_up: bool = True) -> None:
        self.static.pad(bucket)
        ids, pos, attn, rows = self.static.views(bucket)
        if warm_up:
            # Outside capture: JIT kernels compile this bucket's specialisation, kernels load,
            # cuBLAS picks its kernels and workspace. The buffers hold only padding rows, so
            # nothing touches the cache.
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._logits(ids, pos, attn, rows)
            torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self.outputs[bucket] = self._logits(ids, pos, attn, rows)  # [seqs(bucket), V]
        self.graphs[bucket] = graph

    def _logits(self, ids, pos, attn, rows) -> torch.Tensor:
        hidden = self.forward(ids, pos, attn, self.kv_caches)
        return self.compute_logits(hidden.index_select(0, rows))

    @contextlib.contextmanager
    def _capturable_attention(self) -> Iterator[None]:
        if self.attention_provider != "reference":
            yield  # the forward's own attention is capturable
            return
        with _RouteOps(capturable_routes()):
            yield

    def bucket_for(self, batch: Sequence[StepSeq]) -> int | None:
        """The captured bucket this step replays in, or None to run it eagerly."""
        cfg = self.config
        if not self.graphs or not batch or len(batch) > cfg.max_batch_size:
            return None
        tokens = 0
        for s in batch:
            if len(s.block_table) > cfg.max_blocks_per_seq:
                return None
            tokens += len(s.token_ids)
        buckets = sorted(self.graphs)
        i = bisect.bisect_left(buckets, tokens)
        return buckets[i] if i < len(buckets) else None

    @torch.inference_mode()
    def execute(self, batch: Sequence[StepSeq], block_size: int) -> torch.Tensor:
        """Logits [N, V] of the sequences with needs_logits, in batch order (as ModelRunner)."""
        bucket = self.bucket_for(batch)
        if bucket is None:
            inp = prepare_inputs(batch, block_size, self.device)
            hidden = self.forward(inp.input_ids, inp.positions, inp.attn, self.kv_caches)
            return self.compute_logits(hidden.index_select(0, inp.logits_indices))
        rows = self.static.fill(batch, block_size, bucket)
        self.graphs[bucket].replay()
        # A copy: the static output is overwritten by the next replay of any bucket (shared pool).
        return self.outputs[bucket][:rows].clone()
