"""The official `openai` Python client, unmodified, against bot-runtime.

bot-runtime runs in front of the mock upstream (see conftest.py), whose reply
is REPLY. Usage counts are words: completion_tokens == len(REPLY.split()).

Run: MOCK_UPSTREAM_BIN=target/debug/mock-upstream \
     BOT_RUNTIME_BIN=target/debug/bot-runtime .cache/venv/bin/pytest -q tests/python
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from conftest import API_KEY, CHUNK_DELAY_MS, MODEL, REPLY

REPLY_WORDS = len(REPLY.split())
USER_TEXT = "Say hello to the test suite please"
MESSAGES = [
    {"role": "system", "content": "You are a terse test assistant."},
    {"role": "user", "content": USER_TEXT},
]


def make_client(runtime, api_key: str = API_KEY) -> OpenAI:
    return OpenAI(base_url=runtime.base_url, api_key=api_key, max_retries=0, timeout=10)


@pytest.fixture
def client(runtime):
    c = make_client(runtime)
    yield c
    c.close()


def _error_json(exc: openai.APIStatusError) -> dict:
    """The raw response body of an API error, which must be OpenAI's shape."""
    try:
        body = exc.response.json()
    except ValueError:
        pytest.fail(
            f"HTTP {exc.status_code} error body is not JSON: {exc.response.text!r}"
        )
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"error body is not {{'error': {{...}}}}: {body!r}"
    )
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"no error.message: {body!r}"
    assert isinstance(err.get("type"), str) and err["type"], f"no error.type: {body!r}"
    return err


def _check_usage(usage, *, prompt_at_least: int) -> None:
    assert usage is not None, "usage missing"
    assert usage.completion_tokens == REPLY_WORDS, (
        f"completion_tokens {usage.completion_tokens} != {REPLY_WORDS} words in the reply"
    )
    # The runtime may add its own system prompt, so the prompt count is a
    # lower bound: at least the words of the user's own message.
    assert usage.prompt_tokens >= prompt_at_least, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


def _collect(stream) -> list:
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
    return chunks


def _content_of(chunks) -> list[str]:
    return [
        c.choices[0].delta.content
        for c in chunks
        if c.choices and c.choices[0].delta.content
    ]


def _check_chunk_fields(chunks) -> None:
    assert chunks, "stream produced no chunks"
    for c in chunks:
        assert c.object == "chat.completion.chunk", c
        assert c.model == MODEL, c
        assert isinstance(c.id, str) and c.id, c
        assert isinstance(c.created, int), c
    ids = {c.id for c in chunks}
    assert len(ids) == 1, f"chunks of one stream carry different ids: {sorted(ids)}"


# 1 --------------------------------------------------------------------------
def test_models_list_contains_mock_model(client):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids, ids
    for m in page.data:
        assert m.object == "model", m


# 2 --------------------------------------------------------------------------
def test_chat_completion_non_streaming(client):
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert resp.object == "chat.completion", resp
    assert isinstance(resp.id, str) and resp.id, resp
    assert isinstance(resp.created, int), resp
    assert resp.model == MODEL, resp
    assert len(resp.choices) == 1, resp.choices
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == REPLY
    assert choice.finish_reason == "stop"
    _check_usage(resp.usage, prompt_at_least=len(USER_TEXT.split()))


# 3 --------------------------------------------------------------------------
def test_chat_completion_streaming(client):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = _collect(stream)
    _check_chunk_fields(chunks)

    pieces = _content_of(chunks)
    assert "".join(pieces) == REPLY, pieces
    assert len(pieces) > 1, f"expected several content chunks, got {pieces}"

    with_choices = [c for c in chunks if c.choices]
    assert len(with_choices) == len(chunks), (
        "a chunk with choices == [] (usage chunk) was sent although "
        f"stream_options.include_usage was not requested: {chunks[-1]}"
    )
    assert with_choices[-1].choices[0].finish_reason == "stop", with_choices[-1]
    for c in with_choices[:-1]:
        assert c.choices[0].finish_reason is None, c
    assert any(c.choices[0].delta.role == "assistant" for c in with_choices), (
        "no chunk carries delta.role == 'assistant'"
    )
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]


def test_streaming_is_incremental(client):
    """Chunks must reach the client as the upstream sends them, not buffered.

    The mock waits CHUNK_DELAY_MS between chunks, so the first and last
    content chunks arrive at least (words - 1) delays apart when streamed; a
    runtime that buffers the whole answer delivers them together.
    """
    arrivals = []
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == REPLY_WORDS, arrivals
    spread = arrivals[-1] - arrivals[0]
    expected = (REPLY_WORDS - 1) * CHUNK_DELAY_MS / 1000
    assert spread >= 0.5 * expected, (
        f"content chunks arrived within {spread * 1000:.0f} ms; streamed they take "
        f"~{expected * 1000:.0f} ms (the response looks buffered)"
    )


# 4 --------------------------------------------------------------------------
def test_chat_completion_streaming_include_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = _collect(stream)
    _check_chunk_fields(chunks)

    assert "".join(_content_of(chunks)) == REPLY
    usage_chunks = [c for c in chunks if c.choices == []]
    assert len(usage_chunks) == 1, (
        f"expected exactly one chunk with choices == [], got {len(usage_chunks)}"
    )
    assert chunks[-1] is usage_chunks[0], "the usage chunk must be the last chunk"
    _check_usage(usage_chunks[0].usage, prompt_at_least=len(USER_TEXT.split()))
    last_choice = [c for c in chunks if c.choices][-1]
    assert last_choice.choices[0].finish_reason == "stop", last_choice


# 5 --------------------------------------------------------------------------
def test_array_content_parts(client):
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    )
    assert resp.choices[0].message.content == REPLY
    assert resp.choices[0].finish_reason == "stop"
    _check_usage(resp.usage, prompt_at_least=2)


# 6 --------------------------------------------------------------------------
def test_wrong_api_key_is_401(runtime):
    bad = make_client(runtime, api_key="wrong")
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model=MODEL, messages=MESSAGES)
    finally:
        bad.close()
    exc = info.value
    assert exc.status_code == 401
    _error_json(exc)


# 7 --------------------------------------------------------------------------
def test_empty_messages_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[])
    exc = info.value
    assert exc.status_code == 400
    err = _error_json(exc)
    assert "messages" in err["message"] or err.get("param") == "messages", (
        f"error does not name the 'messages' field: {err!r}"
    )


def test_missing_model_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=openai.omit, messages=MESSAGES)
    exc = info.value
    assert exc.status_code == 400
    err = _error_json(exc)
    assert "model" in err["message"] or err.get("param") == "model", (
        f"error does not name the 'model' field: {err!r}"
    )


# 8 --------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_unknown_model_is_404(client, stream):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=stream)
    exc = info.value
    assert exc.status_code == 404
    err = _error_json(exc)
    assert exc.code == "model_not_found", err


# 9 --------------------------------------------------------------------------
def test_async_client_streaming(runtime):
    async def one(aclient: AsyncOpenAI) -> str:
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        )
        pieces = []
        finish = None
        async for chunk in stream:
            if chunk.choices:
                if chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                finish = chunk.choices[0].finish_reason or finish
        assert finish == "stop"
        return "".join(pieces)

    async def main() -> list[str]:
        aclient = AsyncOpenAI(
            base_url=runtime.base_url, api_key=API_KEY, max_retries=0, timeout=10
        )
        try:
            # Several streams at once through one client (one connection pool).
            return await asyncio.gather(*(one(aclient) for _ in range(3)))
        finally:
            await aclient.close()

    assert asyncio.run(main()) == [REPLY] * 3
