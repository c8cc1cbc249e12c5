"""The offline API: `LLM(model).generate(prompts, SamplingParams)`, running what
`kiln.resolve` chooses for the model (the cached artifact, or the eager reference)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kiln.config import EngineConfig
from kiln.resolve import build_engine
from runtime.outputs import TokenLogprob
from runtime.sampling_params import SamplingParams


@dataclass(frozen=True)
class Completion:
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None


class LLM:
    def __init__(self, model: str = "demo", **engine_kwargs):
        self.engine = build_engine(EngineConfig(model=model, **engine_kwargs))

    def generate(
        self,
        prompts: Sequence[str | list[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[Completion]:
        """Run every prompt as one continuous batch; results come back in prompt order."""
        params = params or SamplingParams()
        per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        ids = [f"llm-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, per_prompt):
            self.engine.add_request(rid, prompt, p)
        done: dict[str, Completion] = {}
        logprobs: dict[str, list[TokenLogprob]] = {rid: [] for rid in ids}
        while self.engine.has_unfinished():
            for out in self.engine.step():
                logprobs[out.request_id].extend(out.new_logprobs or [])
                if out.finished:
                    done[out.request_id] = Completion(
                        out.prompt_token_ids,
                        out.token_ids,
                        out.text,
                        out.finish_reason,
                        logprobs[out.request_id]
                        if per_prompt[ids.index(out.request_id)].logprobs is not None
                        else None,
                    )
        return [done[rid] for rid in ids]
