"""A tiny engine honouring `runtime.engine.Engine`'s contract, for fast in-process tests.

Each step gives every request one token (a letter derived from its seed and position), and
records which thread called it, so tests can check the server's threading contract.
"""

from __future__ import annotations

import threading
import time

from kiln.errors import KilnError
from runtime.outputs import RequestOutput, TokenLogprob

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class FakeTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % 256 for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class FakeEngine:
    model_name = "fake"
    max_model_len = 64

    def __init__(
        self,
        fail_step_at: int | None = None,
        reject_prompt: str | None = None,
        step_delay: float = 0.0,
    ):
        self.step_delay = step_delay
        self.tokenizer = FakeTokenizer()
        self.fail_step_at = fail_step_at
        self.reject_prompt = reject_prompt
        self.requests: dict[str, dict] = {}
        self.aborted: list[str] = []
        self.steps = 0
        self.threads: set[int] = set()

    def add_request(self, request_id, prompt, params) -> None:
        self.threads.add(threading.get_ident())
        if prompt == self.reject_prompt:
            raise KilnError("prompt rejected by the fake engine")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) + params.max_tokens > self.max_model_len:
            raise KilnError("prompt + max_tokens exceeds the context length")
        self.requests[request_id] = {"prompt": ids, "out": [], "params": params}

    def step(self) -> list[RequestOutput]:
        self.threads.add(threading.get_ident())
        self.steps += 1
        time.sleep(self.step_delay)
        if self.fail_step_at is not None and self.steps >= self.fail_step_at:
            raise RuntimeError("simulated device failure")
        return [self._advance(rid) for rid in list(self.requests)]

    def _advance(self, rid: str) -> RequestOutput:
        req = self.requests[rid]
        p = req["params"]
        tok = ord(LETTERS[((p.seed or 0) + len(req["out"])) % 26])
        req["out"].append(tok)
        done = len(req["out"]) >= p.max_tokens
        if done:
            del self.requests[rid]
        lps = [TokenLogprob(tok, -0.5, ((tok, -0.5),))] if p.logprobs is not None else None
        return RequestOutput(
            rid,
            req["prompt"],
            [tok],
            chr(tok),
            list(req["out"]),
            self.tokenizer.decode(req["out"]),
            done,
            "length" if done else None,
            lps,
        )

    def abort(self, request_id: str) -> None:
        self.threads.add(threading.get_ident())
        if self.requests.pop(request_id, None) is not None:
            self.aborted.append(request_id)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def stats(self) -> dict:
        return {
            "num_running": len(self.requests),
            "num_waiting": 0,
            "kv_usage": 0.0,
            "kv_blocks_used": 0,
            "kv_blocks_total": 16,
            "prefix_cache_hit_rate": 0.0,
            "compile_seconds": 0.0,
            "load_seconds": 0.0,
        }
