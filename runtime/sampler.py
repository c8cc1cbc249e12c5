"""Turn one step's logits into next tokens, per-request settings included.

Order (as in vLLM/HF): raw logprobs -> penalties -> temperature -> top-k/top-p -> min-p -> draw.
Draws use the exponential race (argmax p / q with q ~ Exp(1)), with one Exp(1) vector of length
V per seeded row taken from that row's own generator, so a seeded request gets the same tokens
whatever else shares its batch. A batch that is all greedy with no penalties is one argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.outputs import TokenLogprob
from runtime.sampling_params import SamplingParams

_TINY = 1e-10  # floor for Exp(1) draws: a 0 draw would divide 0 by 0 for masked tokens


@dataclass(frozen=True)
class SampleResult:
    token_ids: list[int]
    logprobs: list[TokenLogprob | None]  # None where the request did not ask for logprobs


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A per-request generator; keep it for the request's life and pass it every step."""
    return torch.Generator(device=device).manual_seed(seed)


def sample(
    logits: torch.Tensor,  # [N, V] fp32
    params: list[SamplingParams],
    prompt_ids: list[list[int]],
    output_ids: list[list[int]],
    generators: list[torch.Generator | None],
) -> SampleResult:
    """Pick one token per row. `logits` is not modified."""
    n = logits.shape[0]
    assert len(params) == len(prompt_ids) == len(output_ids) == len(generators) == n
    logits = logits.float()
    raw = logits
    if _any_penalty(params):
        logits = apply_penalties(logits, params, prompt_ids, output_ids)
    if all(p.greedy for p in params):
        tokens = logits.argmax(dim=-1)
    else:
        tokens = _sample_mixed(logits, params, generators)
    token_list = tokens.tolist()
    return SampleResult(token_list, compute_logprobs(raw, token_list, params))


def _any_penalty(params: list[SamplingParams]) -> bool:
    return any(_has_penalty(p) for p in params)


def _has_penalty(p: SamplingParams) -> bool:
    return p.repetition_penalty != 1 or p.presence_penalty != 0 or p.frequency_penalty != 0


def apply_penalties(
    logits: torch.Tensor,  # [N, V]
    params: list[SamplingParams],
    prompt_ids: list[list[int]],
    output_ids: list[list[int]],
) -> torch.Tensor:
    """Repetition penalty (HF: over prompt + output; positive logits divided, negative
    multiplied), then presence/frequency (OpenAI: logit -= freq * count + presence * [count>0],
    counts over output tokens). Returns a new tensor; rows without penalties are unchanged."""
    rows = [i for i, p in enumerate(params) if _has_penalty(p)]
    out = logits.clone()
    vocab = logits.shape[1]
    sub = out[rows]  # [R, V]
    out_counts = _counts([output_ids[i] for i in rows], vocab, logits.device)  # [R, V]
    prompt_counts = _counts([prompt_ids[i] for i in rows], vocab, logits.device)
    seen = (out_counts + prompt_counts) > 0
    rep = _column([params[i].repetition_penalty for i in rows], logits)
    penalised = torch.where(sub > 0, sub / rep, sub * rep)
    sub = torch.where(seen, penalised, sub)
    freq = _column([params[i].frequency_penalty for i in rows], logits)
    pres = _column([params[i].presence_penalty for i in rows], logits)
    sub = sub - freq * out_counts - pres * (out_counts > 0).to(sub.dtype)
    out[rows] = sub
    return out


def _counts(id_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """Occurrences of each token per row: [R, V] fp32. Padding goes to an extra column."""
    width = max((len(ids) for ids in id_lists), default=0)
    padded = [ids + [vocab] * (width - len(ids)) for ids in id_lists]
    index = torch.tensor(padded, dtype=torch.int64, device=device).reshape(len(id_lists), width)
    counts = torch.zeros(len(id_lists), vocab + 1, device=device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=counts.dtype))
    return counts[:, :vocab]


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)  # [R, 1]


def _sample_mixed(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """Greedy rows take the argmax; the others are scaled, filtered and drawn."""
    greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    temps = _column([p.temperature if not p.greedy else 1.0 for p in params], logits)
    scaled = logits / temps
    if any(p.top_k > 0 or p.top_p < 1 for p in params):
        scaled = _top_k_top_p(scaled, params)
    if any(p.min_p > 0 for p in params):
        scaled = _min_p(scaled, params)
    draws = _exponential_draws(scaled, params, generators)  # [N, V]
    # argmax(p / q) in log space: masked tokens stay at -inf and tiny p never underflow.
    sampled = (scaled - draws.log()).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def _top_k_top_p(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Mask everything outside each row's top-k, then outside its top-p nucleus (the smallest
    set of most likely tokens whose mass reaches p)."""
    vocab = logits.shape[1]
    sorted_logits, order = logits.sort(dim=-1)  # ascending: the best token is last
    k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=logits.device)
    positions = torch.arange(vocab, device=logits.device).unsqueeze(0)  # [1, V]
    sorted_logits = sorted_logits.masked_fill(positions < vocab - k.unsqueeze(1), -float("inf"))
    top_p = _column([p.top_p for p in params], logits)
    mass_below = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [N, V]
    drop = mass_below <= 1 - top_p
    drop[:, -1] = False  # always keep the best token
    sorted_logits = sorted_logits.masked_fill(drop, -float("inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def _min_p(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the best token's."""
    probs = logits.softmax(dim=-1)
    floor = _column([p.min_p for p in params], logits) * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < floor, -float("inf"))


def _exponential_draws(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """Exp(1) noise [N, V]. A sampled row with a generator draws exactly V values from it per
    step, so its stream never depends on the batch; greedy rows never touch theirs."""
    draws = torch.empty_like(logits)
    if any(g is None and not p.greedy for p, g in zip(params, generators, strict=True)):
        draws.exponential_()
    for i, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if gen is not None and not p.greedy:
            draws[i] = _row_draw(logits.shape[1], gen).to(draws.device)
    return draws.clamp_min_(_TINY)


def _row_draw(vocab: int, gen: torch.Generator) -> torch.Tensor:
    """V Exp(1) values on the generator's own device (a CPU generator also serves CUDA logits,
    at the cost of a copy; pass `make_generator(seed, device)` to avoid it)."""
    return torch.empty(vocab, device=gen.device).exponential_(generator=gen)


def compute_logprobs(
    logits: torch.Tensor, token_ids: list[int], params: list[SamplingParams]
) -> list[TokenLogprob | None]:
    """Logprobs of the model's raw distribution (log_softmax of unmodified logits) for the
    chosen token and the top-n, for rows that asked; one device->host copy."""
    rows = [i for i, p in enumerate(params) if p.logprobs is not None]
    result: list[TokenLogprob | None] = [None] * len(params)
    if not rows:
        return result
    logp = torch.log_softmax(logits[rows], dim=-1)  # [R, V]
    chosen = torch.tensor([token_ids[i] for i in rows], device=logits.device)
    chosen_lp = logp.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
    top_lp, top_ids = logp.topk(max(params[i].logprobs for i in rows), dim=-1)  # [R, n]
    top_lp, top_ids = top_lp.tolist(), top_ids.tolist()
    for j, i in enumerate(rows):
        n = params[i].logprobs
        top = tuple(zip(top_ids[j][:n], top_lp[j][:n], strict=True))
        result[i] = TokenLogprob(token_ids[i], chosen_lp[j], top)
    return result
