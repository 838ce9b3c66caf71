"""Scripted fake Ollama / OpenAI-compatible model server speaking real HTTP/1.1 on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import inspect
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import urlsplit

__all__ = [
    "FAULTS",
    "SSE_FRAMINGS",
    "SSE_NEWLINES",
    "FakeModelServer",
    "RequestRecord",
    "apply_stop",
    "main",
    "tokenize",
]

FAULTS = (None, "refuse", "timeout", "401", "403", "404", "429", "500", "malformed", "cut")
# How OpenAI-style streams are framed: "compact" is one `data: <json>` line per event, as OpenAI sends;
# "spec" uses everything the WHATWG event-stream format allows a server to send: comments, `id`/`event`/`retry`
# fields, a field without a colon, `data:` with and without its space, and each event's JSON spread over
# several `data:` lines (pretty-printed), each event split across two HTTP chunks mid-line.
SSE_FRAMINGS = ("compact", "spec")
SSE_NEWLINES = ("\n", "\r\n", "\r")

# Leading space glued to the following word and words split into <= 4 chars
# approximates how BPE tokenisers chunk code; the pattern covers every character
# so "".join(tokenize(t)) == t always holds.
_TOKEN_RE = re.compile(r" ?\w{1,4}| ?[^\w\s]|\s+")

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024
# A "cut" stream sends this many chunks before dropping the connection.
_CUT_AFTER_CHUNKS = 2


def tokenize(text: str) -> list[str]:
    """Split text into small model-like tokens whose concatenation is the original text."""
    return _TOKEN_RE.findall(text)


def apply_stop(text: str, stop: Any) -> tuple[str, bool]:
    """Cut text before the earliest stop string; return (text, whether a stop string matched)."""
    if isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, (list, tuple)):
        stops = [s for s in stop if isinstance(s, str)]
    else:
        stops = []
    positions = [text.find(s) for s in stops if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def _normalize_fault(value: Any) -> str | None:
    if value is None or value == "" or (isinstance(value, str) and value.lower() == "none"):
        return None
    value = str(value).lower()
    if value not in FAULTS:
        raise ValueError(f"unknown fault {value!r}; expected one of {FAULTS}")
    return value


def _check_sse(framing: str, newline: str) -> tuple[str, str]:
    if framing not in SSE_FRAMINGS:
        raise ValueError(f"sse_framing must be one of {SSE_FRAMINGS}, not {framing!r}")
    if newline not in SSE_NEWLINES:
        raise ValueError(f"sse_newline must be one of {SSE_NEWLINES!r}, not {newline!r}")
    return framing, newline


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(eq=False)
class RequestRecord:
    """One HTTP request as the fake received it, plus how it was answered."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes = b""
    query: str = ""
    http_version: str = "HTTP/1.1"
    connection_id: int = 0
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    client_disconnected: bool = False
    completed: bool = False
    status: int | None = None
    fault: str | None = None
    stream: bool = False
    response_text: str | None = None
    chunks_sent: int = 0

    @property
    def done(self) -> bool:
        """Whether the fake has finished with this request (answered, cut, or client gone)."""
        return self.finished_at is not None

    @property
    def model(self) -> str | None:
        """The `model` field of the JSON body, if any."""
        data = self.json if isinstance(self.json, dict) else {}
        model = data.get("model")
        return model if isinstance(model, str) else None

    @property
    def prompt(self) -> str | None:
        """The `prompt` field, or for chat requests the content of the last user message."""
        data = self.json if isinstance(self.json, dict) else {}
        prompt = data.get("prompt")
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            return prompt[0]
        messages = data.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    content = message.get("content")
                    return content if isinstance(content, str) else json.dumps(content)
        return None

    @property
    def suffix(self) -> str | None:
        """The `suffix` field (fill-in-the-middle), if any."""
        data = self.json if isinstance(self.json, dict) else {}
        suffix = data.get("suffix")
        return suffix if isinstance(suffix, str) else None

    @property
    def messages(self) -> list[Any] | None:
        """The `messages` list of a chat request, if any."""
        data = self.json if isinstance(self.json, dict) else {}
        messages = data.get("messages")
        return messages if isinstance(messages, list) else None


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass
class _Reply:
    status: int
    content_type: str = "application/json; charset=utf-8"
    body: bytes = b""
    # When set, the reply is streamed with Transfer-Encoding: chunked, one
    # HTTP chunk per element, with token_delay between elements.
    chunks: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Generation:
    text: str
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int


@dataclass
class _OneShot:
    fault: str
    remaining: int
    path: str | None


class _BadRequest(Exception):
    pass


class _ClientGone(Exception):
    pass


class _Conn:
    """Per-TCP-connection state: our own read buffer so a watcher can detect EOF mid-response."""

    def __init__(self, sock: socket.socket, conn_id: int) -> None:
        self.sock = sock
        self.id = conn_id
        self.started = False
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = bytearray()
        self.eof = False
        self.eof_event = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None

    async def fill(self) -> bool:
        if self.eof:
            return False
        assert self.reader is not None
        try:
            data = await self.reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            self.eof_event.set()
            return False
        self.buf += data
        return True

    def start_watch(self) -> None:
        # HTTP/1.1 clients send nothing while awaiting a response, so reading
        # here only ever yields EOF (client hung up) or pipelined requests,
        # which stay in self.buf for the next parse.
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while len(self.buf) < _MAX_BODY_BYTES and await self.fill():
            pass

    async def stop_watch(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait never raises, so a cancellation aimed at *us* is not swallowed.
            await asyncio.wait([task])

    async def read_line(self) -> bytes:
        while (index := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > _MAX_HEADER_BYTES:
                raise _BadRequest("line too long")
            if not await self.fill():
                raise _ClientGone
        line = bytes(self.buf[:index])
        del self.buf[: index + 2]
        return line

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self.fill():
                raise _ClientGone
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


class FakeModelServer:
    """Scripted stand-in for Ollama and OpenAI-compatible servers, recording every request."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        models: list[str] | None = None,
        default_text: str = "return a + b\n",
        latency: float = 0.0,
        token_delay: float = 0.0,
        fault: str | int | None = None,
        retry_after: int = 1,
        verbose: bool = False,
        sse_framing: str = "compact",
        sse_newline: str = "\n",
    ) -> None:
        """Configure the fake; nothing listens until start() or run_in_thread()."""
        self.host = host
        self.port = port
        self.model = model
        self.models = list(models) if models else None
        self.default_text = default_text
        self.latency = latency
        self.token_delay = token_delay
        self.retry_after = retry_after
        self.verbose = verbose
        self.sse_framing, self.sse_newline = _check_sse(sse_framing, sse_newline)
        self.responses: deque[str] = deque()
        self.script_fn: Callable[[RequestRecord], Any] | None = None
        self.requests: list[RequestRecord] = []
        self.connections_accepted = 0
        self._fault: str | None = _normalize_fault(fault)
        self._one_shot: deque[_OneShot] = deque()
        self._lock = threading.Lock()
        self._conn_ids = itertools.count(1)
        self._response_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._listen_sock: socket.socket | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeModelServer:
        """Bind 127.0.0.1:<port> (ephemeral when port=0) and start serving on the running loop."""
        if self._started:
            return self
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._stopping = False
        self._start_listening()
        self._started = True
        if self._fault == "refuse":
            # The port was bound once so restore() can come back on it.
            self._stop_listening()
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection, cancelling hung handlers promptly."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        self._stop_listening()
        tasks = [t for t in self._handlers if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        # Let transports run their scheduled connection_lost callbacks before the loop may close.
        await asyncio.sleep(0)

    async def __aenter__(self) -> FakeModelServer:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    @classmethod
    def run_in_thread(cls, **kwargs: Any) -> FakeModelServer:
        """Create and start a fake on its own event loop in a daemon thread; close() ends it."""
        server = cls(**kwargs)
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start())
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="FakeModelServer", daemon=True)
        server._thread = thread
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeModelServer thread did not start")
        if errors:
            raise errors[0]
        return server

    def close(self) -> None:
        """Stop a server started with run_in_thread() and join its thread."""
        if self._thread is None:
            raise RuntimeError("close() is for run_in_thread(); use 'await stop()' instead")
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeModelServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------- configuration

    @property
    def fault(self) -> str | None:
        """Persistent fault applied to every request (None, "refuse", "timeout", "401", ...)."""
        return self._fault

    @fault.setter
    def fault(self, value: str | int | None) -> None:
        value = _normalize_fault(value)
        self._on_loop(lambda: self._apply_fault(value))

    def configure(self, **settings: Any) -> FakeModelServer:
        """Set several of latency, token_delay, fault, retry_after, default_text, model, models, sse_framing,
        sse_newline."""
        allowed = {"latency", "token_delay", "fault", "retry_after", "default_text", "model", "models", "verbose",
                   "sse_framing", "sse_newline"}
        unknown = set(settings) - allowed
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        _check_sse(settings.get("sse_framing", "compact"), settings.get("sse_newline", "\n"))
        for name, value in settings.items():
            setattr(self, name, value)
        return self

    def fail_next(self, fault: str | int, times: int = 1, path: str | None = None) -> None:
        """Apply `fault` to the next `times` requests (only those to `path`, when given)."""
        normalized = _normalize_fault(fault)
        if normalized is None:
            raise ValueError("fail_next needs a fault; use restore() to clear faults")
        if normalized == "refuse":
            raise ValueError("'refuse' is a listening state: set fake.fault = 'refuse' and call restore()")
        with self._lock:
            self._one_shot.append(_OneShot(normalized, times, path))

    def restore(self) -> None:
        """Clear persistent and one-shot faults; listen again on the same port if refusing."""
        with self._lock:
            self._one_shot.clear()
        self.fault = None

    def script(self, fn: Callable[[RequestRecord], Any] | None) -> None:
        """Compute each answer with fn(record) -> str (may be async); None restores default_text."""
        self.script_fn = fn

    def queue(self, *texts: str) -> None:
        """Queue one-shot answers, used in order before script_fn/default_text."""
        with self._lock:
            self.responses.extend(texts)

    # ----------------------------------------------------------------- recording

    def count(self, path: str | None = None) -> int:
        """Number of recorded requests, optionally only those to `path`."""
        return sum(1 for r in list(self.requests) if path is None or r.path == path)

    @property
    def last_request(self) -> RequestRecord | None:
        """The most recently recorded request, or None."""
        requests = self.requests
        return requests[-1] if requests else None

    def reset(self) -> None:
        """Forget recorded requests and zero connections_accepted (configuration is kept)."""
        self.requests = []
        self.connections_accepted = 0

    async def wait_for_requests(self, n: int = 1, timeout: float = 5.0, path: str | None = None) -> list[RequestRecord]:
        """Wait until at least n requests (to `path`, if given) are recorded; return them."""
        deadline = time.monotonic() + timeout
        while self.count(path) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"saw {self.count(path)} of {n} requests within {timeout}s")
            await asyncio.sleep(0.005)
        return [r for r in list(self.requests) if path is None or r.path == path]

    async def wait_for_disconnect(self, timeout: float = 5.0) -> RequestRecord:
        """Wait for the first request whose client hung up before the response was complete."""
        deadline = time.monotonic() + timeout
        while (record := self._first_disconnected()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no client disconnect within {timeout}s")
            await asyncio.sleep(0.005)
        return record

    def wait_for_requests_sync(self, n: int = 1, timeout: float = 5.0, path: str | None = None) -> list[RequestRecord]:
        """Blocking wait_for_requests for thread mode / sync callers."""
        deadline = time.monotonic() + timeout
        while self.count(path) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"saw {self.count(path)} of {n} requests within {timeout}s")
            time.sleep(0.005)
        return [r for r in list(self.requests) if path is None or r.path == path]

    def wait_for_disconnect_sync(self, timeout: float = 5.0) -> RequestRecord:
        """Blocking wait_for_disconnect for thread mode / sync callers."""
        deadline = time.monotonic() + timeout
        while (record := self._first_disconnected()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no client disconnect within {timeout}s")
            time.sleep(0.005)
        return record

    def _first_disconnected(self) -> RequestRecord | None:
        return next((r for r in list(self.requests) if r.client_disconnected), None)

    # ------------------------------------------------------------ loop plumbing

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        # Listening-socket changes must happen on the loop thread; in thread
        # mode callers are on another thread, so hop over and wait.
        loop = self._loop
        if loop is None or not loop.is_running() or threading.get_ident() == self._loop_thread_id:
            return fn()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(timeout=5)

    def _apply_fault(self, value: str | None) -> None:
        self._fault = value
        if not self._started:
            return
        if value == "refuse":
            self._stop_listening()
            # A real outage also kills pooled keep-alive connections.
            for task in list(self._handlers):
                if task is not asyncio.current_task():
                    task.cancel()
        elif self._listen_sock is None:
            self._start_listening()

    def _start_listening(self) -> None:
        # Hand-rolled accept via add_reader (instead of asyncio.Server) keeps
        # listen/unlisten synchronous, so "refuse" takes effect immediately and
        # restore() can re-bind the same port without awaiting.
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._listen_sock = sock
        self._loop.add_reader(sock.fileno(), self._on_acceptable)

    def _stop_listening(self) -> None:
        sock, self._listen_sock = self._listen_sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def _on_acceptable(self) -> None:
        assert self._loop is not None
        for _ in range(64):
            sock = self._listen_sock
            if sock is None:
                return
            try:
                client, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ECONNABORTED / EMFILE: nothing a fake can usefully do.
                return
            client.setblocking(False)
            self.connections_accepted += 1
            conn = _Conn(client, next(self._conn_ids))
            task = self._loop.create_task(self._serve_connection(conn))
            self._handlers.add(task)
            task.add_done_callback(lambda t, c=conn: self._handler_done(t, c))

    def _handler_done(self, task: asyncio.Task[None], conn: _Conn) -> None:
        self._handlers.discard(task)
        # A task cancelled before its first step never ran its finally block.
        if not conn.started:
            conn.sock.close()

    def _log(self, message: str) -> None:
        if self.verbose:
            print(f"[fake-model-server] {message}", file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- HTTP layer

    async def _serve_connection(self, conn: _Conn) -> None:
        conn.started = True
        try:
            conn.reader, conn.writer = await asyncio.open_connection(sock=conn.sock)
            while True:
                try:
                    request = await self._read_request(conn)
                except _ClientGone:
                    return
                except _BadRequest as exc:
                    self._log(f"bad request: {exc}")
                    message = f"{exc}\n".encode()
                    head = self._render_head(400, "text/plain; charset=utf-8", len(message), close=True)
                    await self._write(conn, head + message)
                    return
                keep_alive = await self._handle_request(conn, request)
                if not keep_alive or conn.eof:
                    return
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a fake must never take the test process down
            self._log(f"connection {conn.id} crashed: {exc!r}")
        finally:
            await conn.stop_watch()
            writer = conn.writer
            if writer is None:
                conn.sock.close()
            else:
                if self._stopping:
                    writer.transport.abort()
                else:
                    writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 0.5)
                except BaseException:
                    pass

    async def _read_request(self, conn: _Conn) -> _Request:
        while True:
            # RFC 9112 says to ignore empty lines before a request line.
            while conn.buf.startswith(b"\r\n"):
                del conn.buf[:2]
            end = conn.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(conn.buf) > _MAX_HEADER_BYTES:
                raise _BadRequest("request head too large")
            if not await conn.fill():
                raise _ClientGone
        head = bytes(conn.buf[:end]).decode("latin-1")
        del conn.buf[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
            raise _BadRequest(f"malformed request line {lines[0][:80]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            name = name.strip().lower()
            if not sep or not name or " " in name:
                raise _BadRequest(f"malformed header line {line[:80]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value

        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked_body(conn)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _BadRequest("bad Content-Length") from None
            if length < 0 or length > _MAX_BODY_BYTES:
                raise _BadRequest("bad Content-Length")
            body = await conn.read_exact(length)
        else:
            body = b""
        return _Request(method.upper(), target, version, headers, body)

    async def _read_chunked_body(self, conn: _Conn) -> bytes:
        body = bytearray()
        while True:
            size_line = await conn.read_line()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size < 0 or len(body) + size > _MAX_BODY_BYTES:
                raise _BadRequest("bad chunk size")
            if size == 0:
                while await conn.read_line():  # trailers end with an empty line
                    pass
                return bytes(body)
            body += await conn.read_exact(size)
            if await conn.read_exact(2) != b"\r\n":
                raise _BadRequest("chunk not terminated by CRLF")

    def _render_head(
        self,
        status: int,
        content_type: str,
        length: int | None,
        *,
        close: bool,
        extra: dict[str, str] | None = None,
    ) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            "Server: fake-model-server",
            f"Content-Type: {content_type}",
        ]
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        lines.extend(f"{k}: {v}" for k, v in (extra or {}).items())
        lines.append("Connection: close" if close else "Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _write(self, conn: _Conn, data: bytes) -> bool:
        writer = conn.writer
        if conn.eof or writer is None or writer.transport.is_closing():
            return False
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def _pause(self, conn: _Conn, seconds: float) -> bool:
        """Sleep unless the client hangs up first; return whether it is still connected."""
        if conn.eof:
            return False
        if seconds and seconds > 0:
            try:
                await asyncio.wait_for(conn.eof_event.wait(), seconds)
            except TimeoutError:
                return True
            return False
        return True

    def _take_fault(self, path: str) -> str | None:
        with self._lock:
            for entry in self._one_shot:
                if entry.path is None or entry.path == path:
                    entry.remaining -= 1
                    if entry.remaining <= 0:
                        self._one_shot.remove(entry)
                    return entry.fault
        # Only reachable when a request slipped in just before "refuse": serve it.
        return self._fault if self._fault != "refuse" else None

    @staticmethod
    def _finish(record: RequestRecord, *, completed: bool = False, disconnected: bool = False) -> None:
        record.completed = completed
        if disconnected:
            record.client_disconnected = True
        if record.finished_at is None:
            record.finished_at = time.monotonic()

    async def _handle_request(self, conn: _Conn, request: _Request) -> bool:
        """Record, apply faults and latency, answer; return whether to keep the connection."""
        split = urlsplit(request.target)
        parsed: Any = None
        bad_json = False
        if request.body:
            try:
                parsed = json.loads(request.body)
            except (ValueError, UnicodeDecodeError):
                bad_json = True
        record = RequestRecord(
            method=request.method,
            path=split.path or "/",
            headers=request.headers,
            json=parsed,
            body=request.body,
            query=split.query,
            http_version=request.version,
            connection_id=conn.id,
        )
        if isinstance(parsed, dict):
            # Ollama streams unless told otherwise; OpenAI only when asked.
            default = record.path.startswith("/api/")
            record.stream = bool(parsed.get("stream", default))
        self.requests.append(record)
        self._log(f"conn {conn.id}: {record.method} {request.target}")

        conn.start_watch()
        try:
            fault = self._take_fault(record.path)
            record.fault = fault
            if fault == "timeout":
                await conn.eof_event.wait()
                self._finish(record, disconnected=True)
                return False
            if not await self._pause(conn, self.latency):
                self._finish(record, disconnected=True)
                return False
            try:
                reply = await self._build_reply(record, fault, bad_json)
            except Exception as exc:  # e.g. a failing script function
                self._log(f"reply failed: {exc!r}")
                reply = self._error_reply(500, record, detail=f"fake script failed: {exc!r}")
            return await self._send_reply(conn, record, reply, fault, request.keep_alive)
        finally:
            await conn.stop_watch()

    async def _send_reply(
        self, conn: _Conn, record: RequestRecord, reply: _Reply, fault: str | None, keep_alive: bool
    ) -> bool:
        record.status = reply.status
        chunks = reply.chunks
        if fault == "malformed":
            chunks, reply.body = self._garbage(reply, chunks)
        cut = fault == "cut"
        close = not keep_alive

        if chunks is None:
            head = self._render_head(reply.status, reply.content_type, len(reply.body), close=close, extra=reply.headers)
            if cut:
                await self._write(conn, head + reply.body[: len(reply.body) // 2])
                self._finish(record)
                return False
            if not await self._write(conn, head + reply.body):
                self._finish(record, disconnected=True)
                return False
            self._finish(record, completed=True)
            self._log(f"conn {conn.id}: -> {reply.status}")
            return not close

        head = self._render_head(reply.status, reply.content_type, None, close=close, extra=reply.headers)
        for index, chunk in enumerate(chunks):
            if index and not await self._pause(conn, self.token_delay):
                self._finish(record, disconnected=True)
                return False
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            if not await self._write(conn, (head if index == 0 else b"") + frame):
                self._finish(record, disconnected=True)
                return False
            record.chunks_sent += 1
            if cut and record.chunks_sent >= _CUT_AFTER_CHUNKS:
                self._finish(record)
                return False
        if not await self._write(conn, b"0\r\n\r\n"):
            self._finish(record, disconnected=True)
            return False
        self._finish(record, completed=True)
        self._log(f"conn {conn.id}: -> {reply.status} ({len(chunks)} chunks)")
        return not close

    @staticmethod
    def _garbage(reply: _Reply, chunks: list[bytes] | None) -> tuple[list[bytes] | None, bytes]:
        if chunks is None:
            return None, b'{"choices": [{"text": "ret<<not json>>'
        if "event-stream" in reply.content_type:
            return [b'data: {"choices": [{"text": "ret\n\n', b"data: <<garbage>>\n\n"], b""
        return [b'{"model": "fake", "response": "ret\n', b"<<garbage>>\n"], b""

    # --------------------------------------------------------------- endpoints

    async def _build_reply(self, record: RequestRecord, fault: str | None, bad_json: bool) -> _Reply:
        if fault in ("401", "403", "404", "429", "500"):
            return self._error_reply(int(fault), record)
        routes: dict[tuple[str, str], Callable[[RequestRecord], Any]] = {
            ("POST", "/v1/completions"): self._openai_completions,
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("GET", "/v1/models"): self._openai_models,
            ("POST", "/api/generate"): self._ollama_generate,
            ("POST", "/api/chat"): self._ollama_chat,
            ("GET", "/api/tags"): self._ollama_tags,
            ("GET", "/api/version"): self._ollama_version,
            ("GET", "/"): self._root,
        }
        path = record.path.rstrip("/") or "/"
        handler = routes.get((record.method, path))
        if handler is None:
            if any(p == path for _m, p in routes):
                return self._error_reply(405, record)
            if path.startswith("/v1"):
                return self._error_reply(404, record, detail=f"Unknown endpoint {record.method} {record.path}")
            return _Reply(404, "text/plain; charset=utf-8", b"404 page not found")
        if record.method == "POST" and (bad_json or not isinstance(record.json, dict)):
            return self._error_reply(400, record)
        result = handler(record)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _is_openai(self, record: RequestRecord) -> bool:
        return record.path.startswith("/v1")

    def _error_reply(self, status: int, record: RequestRecord, detail: str | None = None) -> _Reply:
        model = record.model or self.model
        headers = {"Retry-After": str(self.retry_after)} if status == 429 else {}
        if self._is_openai(record):
            kinds = {
                400: ("invalid_request_error", None, "We could not parse the JSON body of your request."),
                401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
                403: ("permission_denied", "permission_denied", "You are not allowed to access this resource."),
                404: (
                    "invalid_request_error",
                    "model_not_found",
                    f"The model `{model}` does not exist or you do not have access to it.",
                ),
                405: ("invalid_request_error", None, "Method not allowed."),
                429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
                500: ("server_error", None, "The server had an error while processing your request."),
            }
            kind, code, message = kinds.get(status, ("server_error", None, "error"))
            body: Any = {"error": {"message": detail or message, "type": kind, "param": None, "code": code}}
        else:
            messages = {
                400: "invalid request body",
                401: "unauthorized",
                403: "forbidden",
                404: f"model '{model}' not found, try pulling it first",
                405: "method not allowed",
                429: "too many requests, please retry later",
                500: "llama runner process has terminated: fake failure",
            }
            body = {"error": detail or messages.get(status, "error")}
        return _Reply(status, body=_dumps(body), headers=headers)

    async def _generate(self, record: RequestRecord, prompt_text: str, max_tokens: int | None, stop: Any) -> _Generation:
        with self._lock:
            queued = self.responses.popleft() if self.responses else None
        if queued is not None:
            text: Any = queued
        elif self.script_fn is not None:
            text = self.script_fn(record)
            if inspect.isawaitable(text):
                text = await text
        else:
            text = self.default_text
        text = self.default_text if text is None else str(text)
        text, _matched = apply_stop(text, stop)
        tokens = tokenize(text)
        finish = "stop"
        # Ollama uses negative num_predict for "unlimited".
        if max_tokens is not None and max_tokens >= 0 and len(tokens) > max_tokens:
            tokens = tokens[:max_tokens]
            finish = "length"
        text = "".join(tokens)
        record.response_text = text
        return _Generation(text, tokens, finish, len(tokenize(prompt_text)))

    @staticmethod
    def _chat_prompt(data: dict[str, Any]) -> str:
        parts = []
        for message in data.get("messages") or []:
            if isinstance(message, dict):
                content = message.get("content")
                parts.append(content if isinstance(content, str) else json.dumps(content))
        return "\n".join(parts)

    def _sse(self, obj: Any) -> list[bytes]:
        """One event carrying ``obj`` as JSON (or the literal ``[DONE]``), as HTTP chunks."""
        nl = self.sse_newline
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        if self.sse_framing == "compact":
            return [f"data: {data}{nl}{nl}".encode()]
        if not isinstance(obj, str):
            data = json.dumps(obj, ensure_ascii=False, indent=1)  # several lines: several data fields
        seq = next(self._event_ids)
        lines = [": fake keep-alive comment", f"id: {seq}", "event: message", "retry: 1000", "ignoredfield"]
        for i, part in enumerate(data.split("\n")):
            lines.append(f"data:{part}" if i % 2 else f"data: {part}")
        # A field without a colon is a field with an empty value: "data" alone adds an empty line to the data.
        lines.append("data")
        event = (nl.join(lines) + nl + nl).encode()
        # Three HTTP chunks: cut inside a field name, then right after the first line end that follows (between
        # CR and LF with CRLF; after a lone CR a reader cannot yet know whether an LF comes next).
        cut = event.index(b"data") + 3
        cut2 = event.index(nl[0].encode(), cut) + 1
        return [event[:cut], event[cut:cut2], event[cut2:]]

    @staticmethod
    def _usage(gen: _Generation) -> dict[str, int]:
        completion = len(gen.tokens)
        return {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": gen.prompt_tokens + completion,
        }

    async def _openai_completions(self, record: RequestRecord) -> _Reply:
        data = record.json
        prompt = data.get("prompt", "")
        if isinstance(prompt, list):
            prompt = "".join(p for p in prompt if isinstance(p, str))
        prompt_text = (prompt if isinstance(prompt, str) else "") + (record.suffix or "")
        gen = await self._generate(record, prompt_text, _as_int(data.get("max_tokens")), data.get("stop"))
        model = record.model or self.model
        base = {"id": f"cmpl-fake-{next(self._response_ids)}", "object": "text_completion",
                "created": int(time.time()), "model": model}
        if not record.stream:
            body = dict(base, choices=[{"index": 0, "text": gen.text, "logprobs": None,
                                        "finish_reason": gen.finish_reason}], usage=self._usage(gen))
            return _Reply(200, body=_dumps(body))
        chunks = [
            c for tok in gen.tokens
            for c in self._sse(dict(base, choices=[{"index": 0, "text": tok, "logprobs": None, "finish_reason": None}]))
        ]
        chunks += self._sse(dict(base, choices=[{"index": 0, "text": "", "logprobs": None,
                                                 "finish_reason": gen.finish_reason}], usage=self._usage(gen)))
        chunks += self._sse("[DONE]")
        return _Reply(200, "text/event-stream", chunks=chunks, headers={"Cache-Control": "no-cache"})

    async def _openai_chat(self, record: RequestRecord) -> _Reply:
        data = record.json
        max_tokens = _as_int(data.get("max_completion_tokens", data.get("max_tokens")))
        gen = await self._generate(record, self._chat_prompt(data), max_tokens, data.get("stop"))
        model = record.model or self.model
        base = {"id": f"chatcmpl-fake-{next(self._response_ids)}", "created": int(time.time()), "model": model}
        if not record.stream:
            body = dict(base, object="chat.completion", choices=[{
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
            }], usage=self._usage(gen))
            return _Reply(200, body=_dumps(body))
        base["object"] = "chat.completion.chunk"

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> list[bytes]:
            return self._sse(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}], **extra))

        # Real OpenAI opens with a role-only delta and closes with an empty one.
        chunks = chunk({"role": "assistant", "content": ""}, None)
        chunks += [c for tok in gen.tokens for c in chunk({"content": tok}, None)]
        chunks += chunk({}, gen.finish_reason, usage=self._usage(gen))
        chunks += self._sse("[DONE]")
        return _Reply(200, "text/event-stream", chunks=chunks, headers={"Cache-Control": "no-cache"})

    def _openai_models(self, record: RequestRecord) -> _Reply:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models or [self.model]]
        return _Reply(200, body=_dumps({"object": "list", "data": data}))

    def _ollama_final(self, record: RequestRecord, gen: _Generation) -> dict[str, Any]:
        total_ns = int((time.monotonic() - record.started_at) * 1e9)
        return {
            "done": True,
            "done_reason": gen.finish_reason,
            "total_duration": total_ns,
            "load_duration": 0,
            "prompt_eval_count": gen.prompt_tokens,
            "prompt_eval_duration": 0,
            "eval_count": len(gen.tokens),
            "eval_duration": total_ns,
        }

    @staticmethod
    def _ollama_options(data: dict[str, Any]) -> tuple[int | None, Any]:
        options = data.get("options")
        options = options if isinstance(options, dict) else {}
        return _as_int(options.get("num_predict")), options.get("stop")

    async def _ollama_generate(self, record: RequestRecord) -> _Reply:
        data = record.json
        num_predict, stop = self._ollama_options(data)
        prompt = data.get("prompt")
        prompt_text = (prompt if isinstance(prompt, str) else "") + (record.suffix or "")
        gen = await self._generate(record, prompt_text, num_predict, stop)
        model = record.model or self.model
        if not record.stream:
            body = {"model": model, "created_at": _now_iso(), "response": gen.text, "context": [],
                    **self._ollama_final(record, gen)}
            return _Reply(200, body=_dumps(body))
        chunks = [
            _dumps({"model": model, "created_at": _now_iso(), "response": tok, "done": False}) + b"\n"
            for tok in gen.tokens
        ]
        chunks.append(_dumps({"model": model, "created_at": _now_iso(), "response": "", "context": [],
                              **self._ollama_final(record, gen)}) + b"\n")
        return _Reply(200, "application/x-ndjson", chunks=chunks)

    async def _ollama_chat(self, record: RequestRecord) -> _Reply:
        data = record.json
        num_predict, stop = self._ollama_options(data)
        gen = await self._generate(record, self._chat_prompt(data), num_predict, stop)
        model = record.model or self.model
        if not record.stream:
            body = {"model": model, "created_at": _now_iso(),
                    "message": {"role": "assistant", "content": gen.text}, **self._ollama_final(record, gen)}
            return _Reply(200, body=_dumps(body))
        chunks = [
            _dumps({"model": model, "created_at": _now_iso(),
                    "message": {"role": "assistant", "content": tok}, "done": False}) + b"\n"
            for tok in gen.tokens
        ]
        chunks.append(_dumps({"model": model, "created_at": _now_iso(),
                              "message": {"role": "assistant", "content": ""},
                              **self._ollama_final(record, gen)}) + b"\n")
        return _Reply(200, "application/x-ndjson", chunks=chunks)

    def _ollama_tags(self, record: RequestRecord) -> _Reply:
        models = [
            {"name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 0,
             "digest": "fake", "details": {"format": "gguf", "family": "fake"}}
            for m in self.models or [self.model]
        ]
        return _Reply(200, body=_dumps({"models": models}))

    def _ollama_version(self, record: RequestRecord) -> _Reply:
        return _Reply(200, body=_dumps({"version": "0.0.0-fake"}))

    def _root(self, record: RequestRecord) -> _Reply:
        return _Reply(200, "text/plain; charset=utf-8", b"Ollama is running")


# ----------------------------------------------------------------------- CLI


async def _serve_until_signalled(args: argparse.Namespace) -> int:
    fake = FakeModelServer(
        host=args.host,
        port=args.port,
        model=args.model,
        latency=args.latency,
        token_delay=args.token_delay,
        fault=args.fault,
        retry_after=args.retry_after,
        verbose=args.verbose,
        sse_framing=args.sse_framing,
        sse_newline={"lf": "\n", "crlf": "\r\n", "cr": "\r"}[args.sse_newline],
        **({"default_text": args.response} if args.response is not None else {}),
    )
    await fake.start()
    print(f"PORT={fake.port}", flush=True)
    print(f"URL={fake.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await fake.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry: serve a fake model server until SIGINT/SIGTERM, printing PORT=<n> first."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.model_server",
        description="Fake Ollama/OpenAI-compatible model server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first response byte")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--response", default=None, help="completion text to answer with (verbatim)")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--fault", default=None, choices=[f for f in FAULTS if f is not None])
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds for the 429 fault")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    parser.add_argument("--sse-framing", default="compact", choices=SSE_FRAMINGS,
                        help="compact: one data line per event; spec: every framing the SSE format allows")
    parser.add_argument("--sse-newline", default="lf", choices=["lf", "crlf", "cr"], help="SSE line endings")
    args = parser.parse_args(argv)
    return asyncio.run(_serve_until_signalled(args))


if __name__ == "__main__":
    sys.exit(main())
