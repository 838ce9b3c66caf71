"""OpenAI-compatible backend: /v1/completions for FIM, /v1/chat/completions for chat, SSE streaming, Bearer key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from hapa_lsp import errors
from hapa_lsp.backends import Backend, ProbeResult, Usage, _loads, read_timings

if TYPE_CHECKING:
    from hapa_lsp.prompts import ChatMessage, FimPrompt, FimTemplate


# A stream reports token usage only when asked (OpenAI, llama-server, vLLM, Ollama's /v1): a last event with
# ``usage`` and no choices. Without it, history would store prompt_tokens = 0 for every streamed call.
_USAGE = {"include_usage": True}


class OpenAIBackend(Backend):
    """Any server speaking the OpenAI API: OpenAI, vLLM, llama-server, LM Studio, Ollama's /v1, DeepSeek, Mistral."""

    kind = "openai"

    def _path(self, tail: str) -> str:
        # Users paste either the server root or the .../v1 base URL; accept both.
        return tail if self.base.endswith("/v1") else f"/v1{tail}"

    async def _events(self, resp: httpx.Response) -> AsyncIterator[ServerSentEvent]:
        """The events of an SSE body, framed as the WHATWG spec says (httpx-sse): ``data:`` lines of one event
        joined with "\n", blank line ends an event, ``:`` comments, optional space after the colon, CRLF / CR /
        LF line ends (and only those: U+2028 inside JSON is text). Read failures are mapped to the catalog."""
        try:
            async with aclosing(EventSource(resp).aiter_sse()) as events:
                async for event in events:
                    yield event
        except SSEError as exc:  # raised for a Content-Type that is not text/event-stream
            raise errors.MalformedResponse(
                f"{self.base} answered Content-Type '{resp.headers.get('content-type', '')}', not an event stream; "
                f"is hapa.backend.kind '{self.kind}' right for this server?") from exc
        except httpx.TimeoutException as exc:
            raise errors.ModelTimeout(f"{self.base} stopped sending mid-answer") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise errors.MalformedResponse(f"the stream from {self.base} broke off") from exc

    async def _sse(self, path: str, payload: dict[str, Any], usage: Usage, pick, timeout: float | None
                   ) -> AsyncIterator[str]:
        async with self._stream(self._path(path), payload, timeout) as resp, aclosing(self._events(resp)) as events:
            async for event in events:
                data = event.data
                if not data.strip():
                    continue  # an event without data (a keep-alive): nothing to read
                if data.strip() == "[DONE]":
                    return
                obj = _loads(data, self.base)
                if not isinstance(obj, dict):
                    raise errors.MalformedResponse(f"{self.base} sent an event that is not a JSON object")
                if "error" in obj:
                    raise errors.UpstreamServerError(f"{self.base} reported an error mid-stream")
                u = obj.get("usage")
                if isinstance(u, dict):
                    usage.prompt_tokens = int(u.get("prompt_tokens") or 0)
                    usage.completion_tokens = int(u.get("completion_tokens") or 0)
                read_timings(obj, usage)
                choices = obj.get("choices")
                if not isinstance(choices, list):
                    raise errors.MalformedResponse(f"{self.base} sent an event without choices")
                if not choices:
                    continue
                try:
                    text = pick(choices[0])
                except (KeyError, TypeError, AttributeError) as exc:
                    raise errors.MalformedResponse(f"{self.base} sent a choice of unexpected shape") from exc
                if text:
                    usage.chunks += 1
                    yield text
        # A stream that ends without [DONE] is treated as complete: several servers omit it.

    def stream_fim(self, prompt: FimPrompt, usage: Usage, timeout: float | None = None) -> AsyncIterator[str]:
        """FIM through /v1/completions (raw template, or prompt + suffix in native mode); chat models via chat."""
        if prompt.template is None:
            return self.stream_chat(prompt.messages, model=prompt.model, max_tokens=prompt.max_tokens,
                                    temperature=prompt.temperature, usage=usage, stop=prompt.stop, timeout=timeout)
        payload: dict[str, Any] = {"model": prompt.model, "max_tokens": prompt.max_tokens,
                                   "temperature": prompt.temperature, "stream": True,
                                   "stream_options": _USAGE}
        if self.settings.fim_mode == "native":
            payload.update(prompt=prompt.prefix, suffix=prompt.suffix)
        else:
            payload["prompt"] = prompt.raw()
        if prompt.stop:
            # OpenAI accepts at most four stop sequences; the rest are applied by the post-processor.
            payload["stop"] = list(prompt.stop[-4:]) if "\n" in prompt.stop else list(prompt.stop[:4])
        return self._sse("/completions", payload, usage, lambda c: c.get("text", ""), timeout)

    def stream_raw(self, prompt: str, *, model: str, max_tokens: int, temperature: float, usage: Usage,
                   stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """A raw prompt through /v1/completions."""
        payload: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                   "temperature": temperature, "stream": True, "stream_options": _USAGE}
        if stop:
            payload["stop"] = list(stop[:4])
        return self._sse("/completions", payload, usage, lambda c: c.get("text", ""), timeout)

    def stream_chat(self, messages: list[ChatMessage], *, model: str, max_tokens: int, temperature: float,
                    usage: Usage, stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """Chat through /v1/chat/completions."""
        payload: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": temperature,
                                   "stream": True, "stream_options": _USAGE,
                                   "messages": [{"role": m.role, "content": m.content} for m in messages]}
        if stop:
            payload["stop"] = list(stop[:4])
        return self._sse("/chat/completions", payload, usage,
                         lambda c: (c.get("delta") or {}).get("content") or "", timeout)

    async def fim_styles(self, model: str, template: FimTemplate) -> dict[str, Any]:
        """Which ways of sending FIM this server honours for ``model``, learnt from the prompt token counts it
        reports (four one-token requests; nothing is assumed from the server's name):

        - ``native``: "honoured" when a ``suffix`` adds prompt tokens, "ignored" when it adds none (llama-server
          on /v1/completions), "rejected" when the request fails (OpenAI's chat models);
        - ``template``: "honoured" when the family's FIM markers add at most one token each (the tokenizer knows
          them), "text" when the model would read them as plain text;

        each "unknown" when the server reports no usage. ``llama_server`` tells whether the answers carried
        llama-server's ``timings``."""
        base = "def total(items):\n"
        suffix = "\n".join(f"    value_{i} = compute(items, {i})" for i in range(8)) + "\n"
        markers = template.prefix_token + template.suffix_token + template.middle_token
        plain, with_suffix, with_markers = (await self._count(model, base), await self._count(model, base, suffix),
                                            await self._count(model, markers + base))
        out: dict[str, Any] = {"native": "unknown", "template": "unknown",
                               "llama_server": any(c.get("llama_server") for c in (plain, with_suffix))}
        n0 = plain.get("n")
        if with_suffix.get("failed"):
            out["native"] = "rejected"
        elif n0 is not None and with_suffix.get("n") is not None:
            out["native"] = "honoured" if with_suffix["n"] > n0 else "ignored"
        if n0 is not None and with_markers.get("n") is not None:
            out["template"] = "honoured" if with_markers["n"] - n0 <= 3 else "text"
        return out

    async def _count(self, model: str, prompt: str, suffix: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                                   "stream": False}
        if suffix is not None:
            payload["suffix"] = suffix
        try:
            resp = await self.client.post(f"{self.base}{self._path('/completions')}", json=payload,
                                          headers=self._headers(),
                                          timeout=httpx.Timeout(15.0, connect=self.settings.connect_timeout))
            body = resp.json() if resp.status_code < 400 else None
        except (httpx.HTTPError, ValueError):
            return {"failed": True}
        if not isinstance(body, dict):
            return {"failed": True}
        usage = body.get("usage")
        n = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return {"n": n if isinstance(n, int) and n > 0 else None, "llama_server": isinstance(body.get("timings"), dict)}

    async def probe(self, models: tuple[str, ...]) -> ProbeResult:
        """GET /v1/models."""
        return await self._probe_get(self._path("/models"), lambda j: [m["id"] for m in j["data"]], models)
