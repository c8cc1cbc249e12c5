"""The engine: scheduler + model runner + sampler + detokenizer, one `step()` at a time.

`step()` is the whole loop: schedule, run, sample, update, report. Everything that decides
*what* runs lives in `scheduler/`; everything that touches tensors lives in the runner and
the sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from kiln.config import EngineConfig
from kiln.errors import KilnError
from model_defs.step_inputs import StepSeq
from runtime.detokenizer import DetokUpdate, IncrementalDetokenizer
from runtime.outputs import RequestOutput, TokenLogprob
from runtime.sampler import make_generator, sample
from runtime.sampling_params import SamplingParams
from runtime.startup import LoadedModel
from scheduler.scheduler import Scheduler, SchedulerOutput
from scheduler.sequence import Sequence

_NO_TEXT = DetokUpdate("", False)


@dataclass
class _Request:
    seq: Sequence
    params: SamplingParams
    detok: IncrementalDetokenizer | None  # None: the caller detokenizes (engine core)
    generator: torch.Generator | None
    arrival: float
    first_token: float | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


class Engine:
    def __init__(self, config: EngineConfig, loaded: LoadedModel):
        self.config = config
        self.loaded = loaded
        self.tokenizer = self.loaded.tokenizer
        self.model_name = self.loaded.name
        self.max_model_len = self.loaded.max_model_len
        self.scheduler = Scheduler(self.loaded.scheduler_config)
        self.eos_token_ids = set(self.loaded.eos_token_ids)
        self._requests: dict[str, _Request] = {}
        self.num_preemptions = 0
        self.last_schedule: SchedulerOutput | None = None  # what the latest step ran
        # False: outputs carry only the new token ids (`text` "", `token_ids` empty) and stop
        # strings are the caller's; the engine-core process runs so, the API server detokenizes.
        self.detokenize = True

    # --- requests -----------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        if request_id in self._requests:
            raise KilnError(f"request id {request_id!r} is already in use")
        ids = self._prompt_ids(prompt)
        if len(ids) + params.max_tokens > self.max_model_len:
            raise KilnError(
                f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) = "
                f"{len(ids) + params.max_tokens} exceeds the context length {self.max_model_len}"
            )
        seq = Sequence(request_id, ids, max_tokens=params.max_tokens)
        detok = None
        if self.detokenize:
            detok = IncrementalDetokenizer(
                self.tokenizer, ids, params.stop, params.include_stop_str_in_output
            )
        gen = make_generator(params.seed) if params.seed is not None else None
        self._requests[request_id] = _Request(seq, params, detok, gen, time.monotonic())
        self.scheduler.add(seq)

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            ids = list(prompt)
            vocab = self.loaded.vocab_size
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
            if bad:
                raise KilnError(
                    f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})"
                )
        if not ids:
            raise KilnError("the prompt is empty")
        return ids

    def abort(self, request_id: str) -> None:
        if self._requests.pop(request_id, None) is not None:
            self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    # --- the loop -----------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        sched = self.last_schedule = self.scheduler.schedule()
        self.num_preemptions += len(sched.preempted)
        outputs = [
            self._finish(sid, "length", aborted=True)
            for sid in sched.rejected
            if sid in self._requests
        ]
        if not sched.scheduled:
            return outputs
        sampled = self._run(sched)
        self.scheduler.update(sched, {sid: tok for sid, (tok, _) in sampled.items()})
        for sid, (tok, logprob) in sampled.items():
            outputs.append(self._advance(sid, tok, logprob))
        return outputs

    def _run(self, sched: SchedulerOutput) -> dict[str, tuple[int, TokenLogprob | None]]:
        batch = [
            StepSeq(
                s.seq.token_ids(s.start, s.start + s.num_new_tokens),
                s.start,
                s.seq.block_table,
                s.needs_sample,
            )
            for s in sched.scheduled
        ]
        logits = self.loaded.runner.execute(batch)
        seqs = [s.seq for s in sched.scheduled if s.needs_sample]
        if not seqs:
            return {}
        reqs = [self._requests[s.seq_id] for s in seqs]
        result = sample(
            logits,
            [r.params for r in reqs],
            [r.seq.prompt_token_ids for r in reqs],
            [r.seq.output_token_ids for r in reqs],
            [r.generator for r in reqs],
        )
        return {s.seq_id: (t, lp) for s, t, lp in zip(seqs, result.token_ids, result.logprobs)}

    def _advance(self, sid: str, token: int, logprob: TokenLogprob | None) -> RequestOutput:
        req = self._requests[sid]
        req.first_token = req.first_token or time.monotonic()
        update = req.detok.add([token]) if req.detok is not None else _NO_TEXT
        reason = self._finish_reason(req, token, update.stopped)
        if reason is not None:
            return self._finish(
                sid, reason, new_tokens=[token], new_text=update.new_text, logprob=logprob
            )
        return self._output(req, [token], update.new_text, logprob, finished=False)

    def _finish_reason(self, req: _Request, token: int, stopped_by_string: bool) -> str | None:
        p = req.params
        if stopped_by_string or token in p.stop_token_ids:
            return "stop"
        if token in self.eos_token_ids and not p.ignore_eos:
            return "stop"
        if len(req.seq.output_token_ids) >= p.max_tokens:
            return "length"
        if req.seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _finish(
        self,
        sid: str,
        reason: str,
        new_tokens=(),
        new_text: str = "",
        logprob=None,
        aborted: bool = False,
    ) -> RequestOutput:
        req = self._requests.pop(sid)
        if not aborted:
            self.scheduler.finish(sid, reason)
        if req.detok is not None:
            new_text += req.detok.flush()
        return self._output(req, list(new_tokens), new_text, logprob, True, reason)

    def _output(self, req: _Request, new_tokens, new_text, logprob, finished, reason=None):
        new_lps = None
        if req.params.logprobs is not None and logprob is not None:
            req.logprobs.append(logprob)
            new_lps = [logprob]
        now = time.monotonic()
        return RequestOutput(
            request_id=req.seq.seq_id,
            prompt_token_ids=req.seq.prompt_token_ids,
            new_token_ids=new_tokens,
            new_text=new_text,
            # Without detokenizing, the caller keeps the whole output (no copy per step).
            token_ids=list(req.seq.output_token_ids) if req.detok is not None else [],
            text=req.detok.text if req.detok is not None else "",
            finished=finished,
            finish_reason=reason,
            new_logprobs=new_lps,
            metrics={"arrival": req.arrival, "first_token": req.first_token, "now": now},
        )

    # --- introspection ------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.scheduler
        bm = s.block_manager
        return {
            "num_running": s.num_running,
            "num_waiting": s.num_waiting,
            "num_preemptions": self.num_preemptions,
            "kv_usage": bm.usage,
            "kv_blocks_used": len(bm.blocks) - bm.num_free_blocks,
            "kv_blocks_total": len(bm.blocks),
            "prefix_cache_hit_rate": bm.prefix_hit_rate,
            "compile_seconds": self.loaded.compile_seconds,
            "load_seconds": self.loaded.load_seconds,
        }
