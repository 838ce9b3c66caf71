"""Ollama backend: native /api/generate (raw FIM template or suffix) and /api/chat, NDJSON streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.backends import Backend, ProbeResult, Usage, _loads

if TYPE_CHECKING:
    from hapa_lsp.prompts import ChatMessage, FimPrompt


class OllamaBackend(Backend):
    """Ollama's own API."""

    kind = "ollama"

    async def _ndjson(self, path: str, payload: dict[str, Any], usage: Usage, pick, timeout: float | None
                      ) -> AsyncIterator[str]:
        async with self._stream(path, payload, timeout) as resp:
            async for line in self._lines(resp):
                if not line.strip():
                    continue
                obj = _loads(line, self.base)
                if not isinstance(obj, dict):
                    raise errors.MalformedResponse(f"{self.base} sent a line that is not a JSON object")
                if "error" in obj:
                    msg = str(obj["error"])[:200]
                    if "not found" in msg and "model" in msg:
                        raise errors.ModelNotFound(f"{self.base}: {msg}")
                    raise errors.UpstreamServerError(f"{self.base} reported: {msg}")
                try:
                    text = pick(obj)
                except (KeyError, TypeError, AttributeError) as exc:
                    raise errors.MalformedResponse(f"{self.base} sent an object of unexpected shape") from exc
                if text:
                    usage.chunks += 1
                    yield text
                if obj.get("done"):
                    usage.prompt_tokens = int(obj.get("prompt_eval_count") or 0)
                    usage.completion_tokens = int(obj.get("eval_count") or 0)
                    return
        raise errors.MalformedResponse(f"the stream from {self.base} ended before it was done")

    def _options(self, max_tokens: int, temperature: float, stop: tuple[str, ...]) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_predict": max_tokens, "temperature": temperature}
        if stop:
            opts["stop"] = list(stop)
        return opts

    def stream_fim(self, prompt: FimPrompt, usage: Usage, timeout: float | None = None) -> AsyncIterator[str]:
        """FIM through /api/generate: ``raw`` with the family's template, or ``suffix`` in native mode."""
        if prompt.template is None:
            return self.stream_chat(prompt.messages, model=prompt.model, max_tokens=prompt.max_tokens,
                                    temperature=prompt.temperature, usage=usage, stop=prompt.stop, timeout=timeout)
        payload: dict[str, Any] = {"model": prompt.model, "stream": True, "keep_alive": "30m",
                                   "options": self._options(prompt.max_tokens, prompt.temperature, prompt.stop)}
        if self.settings.fim_mode == "native":
            payload.update(prompt=prompt.prefix, suffix=prompt.suffix)
        else:
            payload.update(prompt=prompt.raw(), raw=True)
        return self._ndjson("/api/generate", payload, usage, lambda o: o.get("response", ""), timeout)

    def stream_raw(self, prompt: str, *, model: str, max_tokens: int, temperature: float, usage: Usage,
                   stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """A raw prompt through /api/generate (``raw``: Ollama applies no template)."""
        payload = {"model": model, "stream": True, "keep_alive": "30m", "prompt": prompt, "raw": True,
                   "options": self._options(max_tokens, temperature, stop)}
        return self._ndjson("/api/generate", payload, usage, lambda o: o.get("response", ""), timeout)

    def stream_chat(self, messages: list[ChatMessage], *, model: str, max_tokens: int, temperature: float,
                    usage: Usage, stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """Chat through /api/chat."""
        payload = {"model": model, "stream": True, "keep_alive": "30m",
                   "messages": [{"role": m.role, "content": m.content} for m in messages],
                   "options": self._options(max_tokens, temperature, stop)}
        return self._ndjson("/api/chat", payload, usage, lambda o: (o.get("message") or {}).get("content", ""),
                            timeout)

    async def probe(self, models: tuple[str, ...]) -> ProbeResult:
        """GET /api/tags."""
        return await self._probe_get("/api/tags", lambda j: [m["name"] for m in j["models"]], models)
