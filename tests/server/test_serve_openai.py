"""End to end: a real `kiln serve` process driven by the official `openai` client."""

from __future__ import annotations

import random

import openai
import pytest

pytestmark = pytest.mark.timeout(300)

RNG = random.Random(20261127)
WORDS = "the model engine kiln token text write code python data test world house".split()


def prompt(k: int = 6) -> str:
    return " ".join(RNG.choice(WORDS) for _ in range(k))


def test_models_lists_the_served_name(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["demo"]


def test_completion_greedy_is_repeatable_and_counts_usage(client):
    p = prompt()
    a = client.completions.create(model="demo", prompt=p, max_tokens=6, temperature=0)
    b = client.completions.create(model="demo", prompt=p, max_tokens=6, temperature=0)
    assert a.choices[0].text == b.choices[0].text
    assert a.choices[0].finish_reason in ("length", "stop")
    assert 1 <= a.usage.completion_tokens <= 6
    assert a.usage.prompt_tokens >= len(p.split())
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens


def test_prompt_forms_and_n_give_one_choice_each(client):
    ids = [RNG.randrange(5, 500) for _ in range(7)]
    cases = [([prompt(), prompt()], 2), (ids, 1), ([ids, ids[:3]], 2)]
    for value, prompts in cases:
        resp = client.completions.create(
            model="demo", prompt=value, n=2, max_tokens=3, temperature=0
        )
        assert [c.index for c in resp.choices] == list(range(2 * prompts))
        assert all(c.finish_reason for c in resp.choices)
    # a token-id prompt is used as is: its prompt token count is exactly its length
    resp = client.completions.create(model="demo", prompt=ids, max_tokens=2, temperature=0)
    assert resp.usage.prompt_tokens == len(ids)


def test_n_with_seed_gives_choice_i_the_seed_plus_i(client):
    p, seed = prompt(), RNG.randrange(1, 10_000)
    many = client.completions.create(
        model="demo", prompt=p, n=3, seed=seed, max_tokens=8, temperature=1.0
    )
    for i, choice in enumerate(many.choices):
        one = client.completions.create(
            model="demo", prompt=p, seed=seed + i, max_tokens=8, temperature=1.0
        )
        assert one.choices[0].text == choice.text


def test_echo_and_logprobs(client):
    p = prompt()
    resp = client.completions.create(
        model="demo", prompt=p, max_tokens=4, temperature=0, echo=True, logprobs=2
    )
    choice = resp.choices[0]
    assert choice.text.startswith(p)
    lp = choice.logprobs
    generated = [v for v in lp.token_logprobs if v is not None]
    assert len(generated) == resp.usage.completion_tokens
    assert all(v <= 0 for v in generated)
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs if top is not None)
    assert lp.text_offset == sorted(lp.text_offset)
    # echoed prompt tokens (no logprob) sit at their offsets in the echoed text
    echoed = [
        (t, o)
        for t, o, v in zip(lp.tokens, lp.text_offset, lp.token_logprobs, strict=True)
        if v is None
    ]
    assert "".join(t for t, _ in echoed) == p
    assert all(choice.text.startswith(t, o) for t, o in echoed)


def test_completion_stream_matches_non_stream_and_reports_usage(client):
    p = prompt()
    full = client.completions.create(model="demo", prompt=p, max_tokens=8, temperature=0)
    chunks = list(
        client.completions.create(
            model="demo",
            prompt=p,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    )
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == full.choices[0].finish_reason and not any(finals[:-1])


def test_chat_non_stream_and_stream_agree(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt()}]
    full = client.chat.completions.create(
        model="demo", messages=messages, max_tokens=6, temperature=0
    )
    msg = full.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    stream = client.chat.completions.create(
        model="demo",
        messages=messages,
        max_completion_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == msg.content
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_chat_logprobs_and_n(client):
    resp = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": prompt()}],
        max_tokens=4,
        temperature=0.8,
        seed=RNG.randrange(100),
        n=2,
        logprobs=True,
        top_logprobs=3,
    )
    assert len(resp.choices) == 2
    for choice in resp.choices:
        content = choice.logprobs.content
        assert 1 <= len(content) <= 4
        assert all(len(e.top_logprobs) == 3 and e.logprob <= 0 for e in content)
    assert resp.usage.completion_tokens == sum(len(c.logprobs.content) for c in resp.choices)


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", "hot"),
        ("temperature", 5),
        ("max_tokens", 0),
        ("n", 0),
        ("top_p", 0),
        ("logprobs", 30),
        ("presence_penalty", 3),
        ("stop", 7),
        ("seed", 1.5),
        ("echo", "yes"),
    ],
)
def test_bad_fields_are_400_naming_the_field(client, field, value):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(
            model="demo", prompt="hi", max_tokens=2, extra_body={field: value}
        )
    assert err.value.body["param"] == field
    assert err.value.body["type"] == "invalid_request_error"


def test_unknown_model_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found"


def test_context_overflow_and_bad_token_ids_are_400(client):
    with pytest.raises(openai.BadRequestError, match="context length") as err:
        client.completions.create(model="demo", prompt=prompt(), max_tokens=5000)
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.completions.create(model="demo", prompt=[3, 10**7], max_tokens=2)
