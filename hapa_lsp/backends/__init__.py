"""Model backends over one shared httpx.AsyncClient: OpenAI-compatible (SSE) and Ollama (NDJSON).

A backend turns a FimPrompt or chat messages into a stream of text deltas. Every httpx or JSON
failure is mapped here, at the edge, to the catalog (``hapa_lsp.errors``); a cancelled consumer
closes the response, which closes the upstream connection.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from hapa_lsp import errors
from hapa_lsp.log import public_url, redact_text, url_credentials

if TYPE_CHECKING:
    from hapa_lsp.config import BackendSettings
    from hapa_lsp.prompts import ChatMessage, FimPrompt


@dataclass(slots=True)
class Usage:
    """Tokens spent by one call, filled in while the stream is read."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0
    # llama-server's ``timings``: prompt tokens it actually evaluated (the rest came from its KV cache) and
    # how many it reused; -1 when the server does not report them.
    prompt_processed: int = -1
    prompt_cached: int = -1

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ProbeResult:
    """What `doctor` and health checks learn from the model server."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    latency_ms: float = 0.0


def make_client(settings: BackendSettings) -> httpx.AsyncClient:
    """The one pooled keep-alive client, with explicit timeouts."""
    timeout = httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout)
    limits = httpx.Limits(max_connections=settings.max_connections,
                          max_keepalive_connections=settings.max_connections, keepalive_expiry=60.0)
    # trust_env=False: a proxy variable on a developer machine must not reroute loopback model traffic.
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False,
                             headers={"User-Agent": "hapa-lsp"})


class Backend:
    """Shared plumbing: URLs, auth header, status mapping and streaming request handling."""

    kind = "base"

    def __init__(self, settings: BackendSettings, client: httpx.AsyncClient):
        self.settings = settings
        self.client = client
        # The endpoint as shown in every message and log line, and as requested: without its userinfo.
        # Credentials in the URL (http://user:password@host) are sent as Basic auth, as httpx would have.
        self.base = public_url(settings.endpoint).rstrip("/")
        creds = url_credentials(settings.endpoint)
        self._basic = None
        if creds is not None:
            self._basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode("utf-8")).decode("ascii")

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._basic is not None:
            h["Authorization"] = self._basic
        elif self.settings.api_key:
            h["Authorization"] = f"Bearer {self.settings.api_key}"
        return h

    def _map_status(self, status: int, body: str, headers: Any) -> errors.HapaError:
        # Upstream bodies go into messages, popups and the incident table: no credential they echo survives.
        body = redact_text(_redact(body[:4096], self.settings.api_key))[:300].strip()
        if status in (401, 403):
            return errors.UpstreamAuthError(f"{self.base} answered HTTP {status}")
        if status == 429:
            retry_after = _parse_retry_after(headers.get("retry-after"))
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            return errors.UpstreamRateLimited(f"{self.base} answered HTTP 429{wait}", retry_after=retry_after)
        if status == 404:
            if "model" in body.lower():
                return errors.ModelNotFound(f"{self.base}: {body or 'model not found'}")
            return errors.MalformedResponse(f"{self.base} has no such endpoint (HTTP 404); "
                                            f"is hapa.backend.kind '{self.kind}' right for this server?")
        if status >= 500:
            return errors.UpstreamServerError(f"{self.base} answered HTTP {status}: {body[:120]}")
        return errors.MalformedResponse(f"{self.base} answered HTTP {status}: {body[:120]}")

    @asynccontextmanager
    async def _stream(self, path: str, payload: dict[str, Any], timeout: float | None = None):
        """POST ``payload`` and yield the open response; map every failure to the catalog."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base}{path}"
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=self.settings.connect_timeout)
        try:
            # ensure_ascii: editor text may hold lone surrogates (from JSON escapes), which UTF-8 cannot encode.
            body = json.dumps(payload, ensure_ascii=True).encode("ascii")
            async with self.client.stream("POST", url, content=body, headers=self._headers(), **kwargs) as resp:
                if resp.status_code >= 400:
                    body = (await resp.aread()).decode("utf-8", "replace")
                    raise self._map_status(resp.status_code, body, resp.headers)
                yield resp
        except httpx.ConnectTimeout as exc:
            raise errors.ModelUnreachable(f"connecting to {self.base} timed out") from exc
        except httpx.ConnectError as exc:
            raise errors.ModelUnreachable(f"cannot connect to {self.base}") from exc
        except httpx.TimeoutException as exc:
            raise errors.ModelTimeout(f"{self.base} did not answer within the time limit") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise errors.MalformedResponse(f"the stream from {self.base} broke off") from exc
        except httpx.HTTPError as exc:
            raise errors.ModelUnreachable(f"HTTP error talking to {self.base}: {type(exc).__name__}") from exc

    async def _lines(self, resp: httpx.Response) -> AsyncIterator[str]:
        try:
            async for line in resp.aiter_lines():
                yield line
        except httpx.TimeoutException as exc:
            raise errors.ModelTimeout(f"{self.base} stopped sending mid-answer") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise errors.MalformedResponse(f"the stream from {self.base} broke off") from exc

    # Subclasses implement these.
    def stream_fim(self, prompt: FimPrompt, usage: Usage, timeout: float | None = None) -> AsyncIterator[str]:
        """Stream the completion of a FIM prompt as text deltas."""
        raise NotImplementedError

    def stream_chat(self, messages: list[ChatMessage], *, model: str, max_tokens: int, temperature: float,
                    usage: Usage, stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """Stream a chat answer as text deltas."""
        raise NotImplementedError

    def stream_raw(self, prompt: str, *, model: str, max_tokens: int, temperature: float, usage: Usage,
                   stop: tuple[str, ...] = (), timeout: float | None = None) -> AsyncIterator[str]:
        """Stream the continuation of a raw prompt (no template applied: next-edit models' own formats)."""
        raise NotImplementedError

    async def probe(self, models: tuple[str, ...]) -> ProbeResult:
        """Check reachability, credentials and that ``models`` exist."""
        raise NotImplementedError

    async def _probe_get(self, path: str, parse: Callable[[Any], list[str]], models: tuple[str, ...]) -> ProbeResult:
        t0 = time.perf_counter()
        try:
            resp = await self.client.get(f"{self.base}{path}", headers=self._headers(),
                                         timeout=httpx.Timeout(5.0, connect=self.settings.connect_timeout))
        except httpx.HTTPError as exc:
            err = errors.ModelUnreachable(f"cannot reach {self.base} ({type(exc).__name__})")
            return ProbeResult(False, [f"{err.code} {err.detail}: {err.spec.remedy}"])
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code >= 400:
            err = self._map_status(resp.status_code, resp.text, resp.headers)
            return ProbeResult(False, [f"{err.code} {err.detail}: {err.spec.remedy}"], latency_ms=ms)
        try:
            names = parse(resp.json())
        except (ValueError, KeyError, TypeError):
            err = errors.MalformedResponse(f"{self.base}{path} did not answer with the expected JSON")
            return ProbeResult(False, [f"{err.code} {err.detail}: {err.spec.remedy}"], latency_ms=ms)
        problems = []
        for m in dict.fromkeys(models):
            if names and not any(n == m or n.split(":")[0] == m or n == f"{m}:latest" for n in names):
                err = errors.ModelNotFound(f"model '{m}' is not on {self.base}")
                problems.append(f"{err.code} {err.detail}: {err.spec.remedy}")
        return ProbeResult(not problems, problems, names, ms)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, when - time.time())


def _loads(line: str, base: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise errors.MalformedResponse(f"{base} sent a line that is not JSON") from exc


def read_timings(obj: Any, usage: Usage) -> None:
    """Copy llama-server's ``timings`` (``prompt_n``, ``cache_n``) from an answer object into ``usage``."""
    t = obj.get("timings") if isinstance(obj, dict) else None
    if isinstance(t, dict):
        n, c = t.get("prompt_n"), t.get("cache_n")
        if isinstance(n, int) and not isinstance(n, bool):
            usage.prompt_processed = n
        if isinstance(c, int) and not isinstance(c, bool):
            usage.prompt_cached = c


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "****") if secret else text


def create_backend(settings: BackendSettings, client: httpx.AsyncClient) -> Backend:
    """The backend for ``settings.kind``."""
    # local: import cycle with the backend modules (each subclasses Backend from this package)
    if settings.kind == "openai":
        from hapa_lsp.backends.openai import OpenAIBackend

        return OpenAIBackend(settings, client)
    if settings.kind == "llamacpp":
        from hapa_lsp.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(settings, client)
    from hapa_lsp.backends.ollama import OllamaBackend

    return OllamaBackend(settings, client)
