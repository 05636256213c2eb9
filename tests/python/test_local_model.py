"""The official `openai` client against bot-runtime's own model (llama.cpp
on the default GGUF file): no upstream, no API key for a provider.

Greedy decoding (temperature 0) keeps the answers repeatable.
"""

from __future__ import annotations

import threading

import openai
import pytest
from openai import OpenAI

from conftest import API_KEY, LOCAL_MODEL, LOCAL_PARALLEL

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(local_runtime):
    c = OpenAI(base_url=local_runtime.base_url, api_key=API_KEY, max_retries=0, timeout=60)
    yield c
    c.close()


def test_lists_the_local_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [LOCAL_MODEL]


def test_answers_paris(client):
    done = client.chat.completions.create(model=LOCAL_MODEL, messages=CAPITAL, temperature=0)
    assert "Paris" in done.choices[0].message.content
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 0


def test_streams_token_by_token(client):
    stream = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=CAPITAL,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(deltas) >= 3, deltas
    assert "Paris" in "".join(deltas)
    assert finish == "stop"
    assert usage.completion_tokens >= len(deltas)


def test_max_tokens_and_stop(client):
    done = client.chat.completions.create(
        model=LOCAL_MODEL, messages=CAPITAL, temperature=0, max_tokens=2
    )
    assert done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 2
    full = client.chat.completions.create(model=LOCAL_MODEL, messages=CAPITAL, temperature=0)
    text = full.choices[0].message.content
    assert " Paris" in text, text
    cut = client.chat.completions.create(
        model=LOCAL_MODEL, messages=CAPITAL, temperature=0, stop=[" Paris"]
    )
    assert cut.choices[0].message.content == text[: text.index(" Paris")]
    assert cut.choices[0].finish_reason == "stop"


def test_beyond_capacity_is_503_with_retry_after(client):
    # LOCAL_PARALLEL streams hold every slot (no queue); one more is refused.
    started = threading.Barrier(LOCAL_PARALLEL + 1)
    release = threading.Event()
    errors: list[BaseException] = []

    def hold():
        try:
            stream = client.chat.completions.create(
                model=LOCAL_MODEL,
                messages=[{"role": "user", "content": "Count from 1 to 200."}],
                max_tokens=300,
                stream=True,
            )
            it = iter(stream)
            next(it)
            started.wait(timeout=60)
            release.wait(timeout=60)
            stream.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            started.abort()

    threads = [threading.Thread(target=hold) for _ in range(LOCAL_PARALLEL)]
    for t in threads:
        t.start()
    try:
        started.wait(timeout=60)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=LOCAL_MODEL, messages=CAPITAL)
        assert refused.value.status_code == 503
        assert refused.value.response.headers["retry-after"] == "2"
        assert refused.value.body["code"] == "model_busy"
    finally:
        release.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
