"""llama.cpp's llama-server, spoken natively: ``/infill`` for FIM, the OpenAI routes for chat and models.

What makes a local model fast while typing is not computing the same prompt twice. llama-server keeps the
KV cache of the last prompt of each slot; a request whose tokens start like the cached ones only evaluates
the rest (``cache_prompt``), and with ``n_cache_reuse`` it also moves cached chunks into place when tokens
before them were removed (a deletion, the window's start cut). It cannot skip tokens inserted before a cached
chunk, so what follows the cursor is evaluated again on every keystroke (measured in tests/real). So this
backend:

- sends the other files' context as ``input_extra`` (the server lays it out in the model's repository
  format before the prefix), in a stable order: files already sent keep their place, new ones go last,
  so a context that changes a little keeps most of its cached tokens;
- sends the whole window before the cursor as ``input_prefix`` (untouched by special-token parsing, which
  llama-server applies to ``prompt``) and at most ``infill_suffix_lines`` lines after it as ``input_suffix``;
- optionally warms the cache (``n_predict: 0``) with the part that will not change while the user types
  on the current line, when that part changed, during the debounce wait before the real request.

Answers carry ``timings.prompt_n``: the prompt tokens actually evaluated, kept in ``Usage.prompt_processed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import httpx

from hapa_lsp import errors
from hapa_lsp.backends import ProbeResult, Usage, _loads, read_timings
from hapa_lsp.backends.openai import OpenAIBackend
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.prompts import ContextFile, FimPrompt

_MAX_ORDER = 256  # paths remembered for the stable order of input_extra


def _head_lines(text: str, lines: int) -> str:
    """The first ``lines`` lines of ``text`` with their line ends (all of it for 0)."""
    if lines <= 0:
        return text
    end = -1
    for _ in range(lines):
        end = text.find("\n", end + 1)
        if end == -1:
            return text
    return text[: end + 1]


class LlamaCppBackend(OpenAIBackend):
    """llama-server: FIM through ``/infill`` with its prompt cache; chat and probing as any OpenAI server."""

    kind = "llamacpp"

    def __init__(self, settings: Any, client: Any):
        super().__init__(settings, client)
        self._order: dict[str, int] = {}  # path -> rank in input_extra, first sent first
        self._next_rank = 0
        self._warmed: tuple | None = None  # what the last warm-up or request put in the cache
        self._warming: asyncio.Task | None = None

    def _root(self, tail: str) -> str:
        # /infill and /props live at the server root, also when the endpoint is given as .../v1.
        return self.base[: -len("/v1")] + tail if self.base.endswith("/v1") else self.base + tail

    def _extra(self, files: tuple[ContextFile, ...]) -> list[dict[str, str]]:
        for f in files:
            if f.path not in self._order:
                self._order[f.path] = self._next_rank
                self._next_rank += 1
        if len(self._order) > _MAX_ORDER:  # forget the oldest paths; their files get a new place when back
            for path in sorted(self._order, key=self._order.__getitem__)[: len(self._order) - _MAX_ORDER]:
                del self._order[path]
        ordered = sorted(files, key=lambda f: self._order.get(f.path, self._next_rank))
        return [{"filename": f.path, "text": f.text} for f in ordered]

    def _payload(self, prompt: FimPrompt, prefix: str, suffix: str, n_predict: int) -> dict[str, Any]:
        # Other files reach the server as input_extra, not as the commented head the prompt may carry.
        head = prompt.context_prefix
        if head and prefix.startswith(head):
            prefix = prefix[len(head):]
        payload: dict[str, Any] = {
            "model": prompt.model, "input_prefix": prefix, "input_suffix": suffix,
            "input_extra": self._extra(prompt.context_files), "prompt": "",
            "n_predict": n_predict, "temperature": prompt.temperature,
            "cache_prompt": True, "n_cache_reuse": self.settings.cache_reuse,
        }
        if prompt.stop:
            payload["stop"] = list(prompt.stop)  # llama-server takes any number of stop strings
        return payload

    def stream_fim(self, prompt: FimPrompt, usage: Usage, timeout: float | None = None) -> AsyncIterator[str]:
        """FIM through ``/infill`` (the server applies the model's FIM and repository format); chat models
        through chat."""
        if prompt.template is None:
            return self.stream_chat(prompt.messages, model=prompt.model, max_tokens=prompt.max_tokens,
                                    temperature=prompt.temperature, usage=usage, stop=prompt.stop, timeout=timeout)
        payload = self._payload(prompt, prompt.prefix, _head_lines(prompt.suffix, self.settings.infill_suffix_lines),
                                prompt.max_tokens)
        payload["stream"] = True
        self._warmed = self._stable_key(payload)
        return self._infill(payload, usage, timeout)

    async def _infill(self, payload: dict[str, Any], usage: Usage, timeout: float | None) -> AsyncIterator[str]:
        async with self._stream(self._root("/infill"), payload, timeout) as resp, \
                aclosing(self._events(resp)) as events:
            async for event in events:
                data = event.data
                if not data.strip():
                    continue
                obj = _loads(data, self.base)
                if not isinstance(obj, dict):
                    raise errors.MalformedResponse(f"{self.base} sent an event that is not a JSON object")
                if "error" in obj:
                    raise errors.UpstreamServerError(f"{self.base} reported an error mid-stream")
                text = obj.get("content", "")
                if not isinstance(text, str):
                    raise errors.MalformedResponse(f"{self.base} sent content that is not text")
                if text:
                    usage.chunks += 1
                    yield text
                if obj.get("stop"):
                    usage.prompt_tokens = int(obj.get("tokens_evaluated") or 0)
                    usage.completion_tokens = int(obj.get("tokens_predicted") or 0)
                    read_timings(obj, usage)
                    return

    # ---- warm-up ---------------------------------------------------------------------------------------------
    @staticmethod
    def _stable_key(payload: dict[str, Any]) -> tuple:
        prefix = payload["input_prefix"]
        head = prefix[: prefix.rfind("\n") + 1]
        return (payload["model"], head, tuple((e["filename"], e["text"]) for e in payload["input_extra"]))

    def warm(self, prompt: FimPrompt) -> None:
        """Put the context and the prefix up to the cursor's line into the server's cache (``n_predict: 0``),
        in the background, when that part differs from what the last request or warm-up sent. Called while
        the engine waits out the debounce; the request that follows then evaluates only its last line and the
        suffix. A failure costs nothing but the warm-up."""
        if not self.settings.warm_up or prompt.template is None:
            return
        if self._warming is not None and not self._warming.done():
            return  # one at a time: a queue of warm-ups would delay the real request
        line_start = prompt.prefix.rfind("\n") + 1
        payload = self._payload(prompt, prompt.prefix[:line_start], "", 0)
        key = self._stable_key(payload)
        if key == self._warmed:
            return
        self._warmed = key
        self._warming = asyncio.ensure_future(self._warm(payload))

    async def _warm(self, payload: dict[str, Any]) -> None:
        try:
            async with self._stream(self._root("/infill"), payload, self.settings.inline_timeout) as resp:
                await resp.aread()
        except errors.HapaError as exc:
            self._warmed = None
            get_logger().debug("llama-server warm-up failed", code=exc.code)

    async def aclose_warm(self) -> None:
        """Wait for a warm-up in flight (tests and the benchmark, before reading the server's counters)."""
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)

    # ---- doctor ------------------------------------------------------------------------------------------------
    async def probe(self, models: tuple[str, ...]) -> ProbeResult:
        """The OpenAI probe (``/v1/models``), then an empty ``/infill`` that must be answered: a model without
        FIM tokens makes llama-server refuse it."""
        result = await super().probe(models)
        if not result.ok:
            return result
        try:
            resp = await self.client.post(self._root("/infill"), headers=self._headers(),
                                          json={"input_prefix": "", "input_suffix": "", "n_predict": 0,
                                                "cache_prompt": False},
                                          timeout=httpx.Timeout(10.0, connect=self.settings.connect_timeout))
        except httpx.HTTPError as exc:
            err = errors.ModelUnreachable(f"{self._root('/infill')} did not answer ({type(exc).__name__})")
            result.problems.append(f"{err.code} {err.detail}: {err.spec.remedy}")
            result.ok = False
            return result
        if resp.status_code >= 400:
            err = self._map_status(resp.status_code, resp.text, resp.headers)
            result.problems.append(f"{err.code} /infill: {err.detail}: {err.spec.remedy} (hapa.backend.kind "
                                   f"'llamacpp' needs llama-server and a model with FIM tokens)")
            result.ok = False
        return result
