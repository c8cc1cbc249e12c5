"""CUDA graphs for decode steps: capture one graph per batch-size bucket, replay it each step.

A decode step of a small batch is hundreds of tiny kernels whose launch overhead dwarfs their
work (Helion/Triton kernels cost ~10 us of host time each), so decode batches replay a graph.
A batch of n sequences with one query token each is padded to the next bucket b in
(1, 2, 4, 8, ..., max_batch_size): its inputs are copied into static buffers that the graph
reads, and the b - n padding rows are made harmless by construction:

- slot_mapping = -1: their K/V is never written to the cache;
- seq_lens = 0 and query_start_loc repeating the last real offset: they own no query rows,
  and the attention kernel gives tokens past the last offset no keys (their output is zero);
- input_ids = positions = 0, block_table rows = 0: valid indices that nothing reads back.

Their logits are computed and dropped. Every graph shares one memory pool and they are captured
largest first, so the smaller graphs reuse the largest one's intermediate memory (only one
graph ever runs at a time). Prefill and mixed batches run eagerly.

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
from model_defs.step_inputs import StepInputs, StepSeq

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
    """Which decode batches get a graph: up to `max_batch_size` sequences (the scheduler's
    max_num_seqs) of up to `max_blocks_per_seq` KV blocks (ceil(max_model_len / block_size))."""

    max_batch_size: int
    max_blocks_per_seq: int
    enforce_eager: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_blocks_per_seq"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CUDAGraphConfig.{name}={value!r} must be an integer >= 1")

    @property
    def buckets(self) -> tuple[int, ...]:
        return batch_buckets(self.max_batch_size)


class StaticDecodeInputs:
    """The device buffers every captured graph reads, sized for the largest bucket; bucket b
    uses the first b rows (views share storage, so one fill serves any bucket)."""

    def __init__(self, max_batch_size: int, max_blocks_per_seq: int, device: torch.device):
        b, kw32, kw64 = max_batch_size, dict(dtype=torch.int32, device=device), dict(dtype=torch.int64, device=device)  # fmt: skip
        self.input_ids = torch.zeros(b, **kw64)  # [B]
        self.positions = torch.zeros(b, **kw64)  # [B]
        self.slot_mapping = torch.full((b,), -1, **kw64)  # [B], -1 = padding (no KV write)
        self.block_tables = torch.zeros((b, max_blocks_per_seq), **kw32)  # [B, max_blocks]
        self.seq_lens = torch.zeros(b, **kw32)  # [B]
        self.query_start_loc = torch.zeros(b + 1, **kw32)  # [B + 1]; all zero: every row pads

    def views(self, bucket: int) -> tuple[torch.Tensor, torch.Tensor, AttnMetadata]:
        """input_ids, positions and attention metadata of a `bucket`-row batch."""
        attn = AttnMetadata(
            slot_mapping=self.slot_mapping[:bucket],
            block_tables=self.block_tables[:bucket],
            seq_lens=self.seq_lens[:bucket],
            query_start_loc=self.query_start_loc[: bucket + 1],
        )
        return self.input_ids[:bucket], self.positions[:bucket], attn

    def fill(self, inp: StepInputs, num_seqs: int, bucket: int) -> None:
        """Copy a decode batch of `num_seqs` rows in and pad rows num_seqs..bucket (see module
        docstring for why each padding value is harmless)."""
        n, a = num_seqs, inp.attn
        self.input_ids[:n].copy_(inp.input_ids)
        self.input_ids[n:bucket].zero_()
        self.positions[:n].copy_(inp.positions)
        self.positions[n:bucket].zero_()
        self.slot_mapping[:n].copy_(a.slot_mapping)
        self.slot_mapping[n:bucket].fill_(-1)
        self.seq_lens[:n].copy_(a.seq_lens)
        self.seq_lens[n:bucket].zero_()
        self.query_start_loc[: n + 1].copy_(a.query_start_loc)
        self.query_start_loc[n + 1 : bucket + 1].fill_(n)  # decode: the last real offset is n
        self.block_tables[:bucket].zero_()
        self.block_tables[:n, : a.block_tables.shape[1]].copy_(a.block_tables)


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
    """Why decode can't use CUDA graphs here, or None when it can."""
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
    """Runs a step: a captured graph for decode-only batches that fit a bucket, eager otherwise.

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
        self.outputs: dict[int, torch.Tensor] = {}  # bucket -> static logits [bucket, V]
        self.static: StaticDecodeInputs | None = None
        self.capture_seconds = 0.0
        self.disabled_reason = graphs_unavailable_reason(config, self.device, attention_provider)
        if self.disabled_reason is not None:
            level = logging.WARNING if self.device.type == "cuda" and not config.enforce_eager else logging.INFO  # fmt: skip
            log.log(level, "CUDA graphs off, decode runs eagerly: %s", self.disabled_reason)

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
        self.static = StaticDecodeInputs(cfg.max_batch_size, cfg.max_blocks_per_seq, self.device)
        pool = torch.cuda.graph_pool_handle()
        with self._capturable_attention():
            for i, bucket in enumerate(sorted(cfg.buckets, reverse=True)):
                t1 = time.perf_counter()
                self._capture_one(bucket, pool, warm_up=self.warm_every_bucket or i == 0)
                self.bucket_seconds[bucket] = time.perf_counter() - t1
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - t0
        log.info("captured %d decode CUDA graphs in %.2f s (seconds per bucket: %s)",
                 len(self.graphs), self.capture_seconds,
                 {b: round(s, 3) for b, s in self.bucket_seconds.items()})  # fmt: skip
        return self.capture_seconds

    def _capture_one(self, bucket: int, pool, warm_up: bool = True) -> None:
        ids, pos, attn = self.static.views(bucket)
        if warm_up:
            # Outside capture: JIT kernels compile this bucket's specialisation, kernels load,
            # cuBLAS picks its kernels and workspace. The buffers hold only padding rows, so
            # nothing touches the cache.
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._logits(ids, pos, attn)
            torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self.outputs[bucket] = self._logits(ids, pos, attn)  # [bucket, V]
        self.graphs[bucket] = graph

    def _logits(self, ids, pos, attn) -> torch.Tensor:
        # Decode: every row is the last token of its sequence, so every row needs logits.
        return self.compute_logits(self.forward(ids, pos, attn, self.kv_caches))

    @contextlib.contextmanager
    def _capturable_attention(self) -> Iterator[None]:
        if self.attention_provider != "reference":
            yield  # the forward's own attention is capturable
            return
        with _RouteOps(capturable_routes()):
            yield

    def bucket_for(self, batch: Sequence[StepSeq]) -> int | None:
        """The captured bucket this batch replays in, or None to run it eagerly."""
        if not self.graphs or not batch or len(batch) > self.config.max_batch_size:
            return None
        for s in batch:
            if len(s.token_ids) != 1 or not s.needs_logits:
                return None  # prefill or chunked prefill: not a decode-only batch
            if len(s.block_table) > self.config.max_blocks_per_seq:
                return None
        buckets = sorted(self.graphs)
        return buckets[bisect.bisect_left(buckets, len(batch))]

    @torch.inference_mode()
    def execute(self, batch: Sequence[StepSeq], inp: StepInputs) -> torch.Tensor:
        """Logits [N, V] of the sequences with needs_logits, in batch order (as ModelRunner)."""
        bucket = self.bucket_for(batch)
        if bucket is None:
            hidden = self.forward(inp.input_ids, inp.positions, inp.attn, self.kv_caches)
            return self.compute_logits(hidden.index_select(0, inp.logits_indices))
        self.static.fill(inp, len(batch), bucket)
        self.graphs[bucket].replay()
        # A copy: the static output is overwritten by the next replay of any bucket (shared pool).
        return self.outputs[bucket][: len(batch)].clone()
