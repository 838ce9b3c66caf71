"""The OpenAI backend reads event streams as the WHATWG format defines them, over HTTP to the fake model server.

Servers may put one event's data on several ``data:`` lines (joined with "\\n"), send comments, ``id:``/``event:``/
``retry:`` fields and fields without a colon, omit the space after the colon, and end lines with CRLF, CR or LF.
"""

from __future__ import annotations

from contextlib import aclosing

import pytest
import pytest_asyncio

from hapa_lsp import errors
from hapa_lsp.backends import Usage, create_backend, make_client
from hapa_lsp.config import BackendSettings
from hapa_lsp.prompts import ChatMessage, build_fim_prompt
from tests.fakes.model_server import SSE_NEWLINES, FakeModelServer, tokenize

MODEL = "qwen2.5-coder:1.5b-base"
# U+2028 and U+0085 are line breaks to str.splitlines() but not to SSE: inside an event's JSON they are text.
ANSWER = "total = a + b\n    return total  # sum\u2028of\x85both"


@pytest_asyncio.fixture
async def fake():
    server = FakeModelServer(model=MODEL)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def backend(fake):
    settings = BackendSettings(kind="openai", endpoint=fake.url, connect_timeout=0.5)
    client = make_client(settings)
    try:
        yield create_backend(settings, client)
    finally:
        await client.aclose()


async def _fim(backend, usage: Usage) -> str:
    prompt = build_fim_prompt(model=MODEL, family_override="auto", prefix="def add(a, b):\n    ", suffix="\n",
                              language="python", path="/w/a.py", max_tokens=64, temperature=0.0, single_line=False)
    async with aclosing(backend.stream_fim(prompt, usage, timeout=5)) as stream:
        return "".join([d async for d in stream])


async def _chat(backend, usage: Usage) -> str:
    async with aclosing(backend.stream_chat([ChatMessage("user", "write add")], model="chat-model", max_tokens=64,
                                            temperature=0.0, usage=usage, timeout=5)) as stream:
        return "".join([d async for d in stream])


@pytest.mark.parametrize("newline", SSE_NEWLINES, ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("call", [_fim, _chat], ids=["fim", "chat"])
async def test_every_framing_the_event_stream_format_allows_is_read(fake, backend, newline, call):
    fake.configure(sse_framing="spec", sse_newline=newline)
    fake.queue(ANSWER)
    usage = Usage()
    assert await call(backend, usage) == ANSWER
    # The usage comes in the last event before [DONE], spread over several data lines like every other.
    assert usage.completion_tokens == len(tokenize(ANSWER)) == usage.chunks
    assert usage.prompt_tokens > 0
    assert fake.last_request.completed


@pytest.mark.parametrize("newline", SSE_NEWLINES, ids=["lf", "crlf", "cr"])
async def test_one_line_events_with_any_line_ending_keep_unicode_line_separators(fake, backend, newline):
    fake.configure(sse_newline=newline)
    fake.queue(ANSWER)
    assert await _fim(backend, Usage()) == ANSWER


async def test_a_reply_that_is_not_an_event_stream_is_a_malformed_response(fake, backend):
    fake.script(lambda record: "x")
    fake.configure(sse_framing="compact")
    prompt = build_fim_prompt(model=MODEL, family_override="auto", prefix="x = ", suffix="", language="python",
                              path="/w/a.py", max_tokens=8, temperature=0.0, single_line=True)
    # The fake answers JSON, not SSE, when the request does not ask for a stream.
    payload = {"model": MODEL, "prompt": prompt.raw(), "max_tokens": 8, "stream": False}
    with pytest.raises(errors.MalformedResponse, match="not an event stream"):
        async with aclosing(backend._sse("/completions", payload, Usage(), lambda c: c.get("text", ""), 5)) as s:
            [d async for d in s]
