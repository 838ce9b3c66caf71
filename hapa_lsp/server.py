"""HapaServer: the pygls LanguageServer, its settings, status reporting, and the feature registrations.

Handlers live in ``hapa_lsp.features``; they stay thin and call the engine. Everything that is slow
to import (httpx, jedi, structlog, prometheus) is imported on first use, after the initialize response.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from hapa_lsp import __version__, errors, stream
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.config import ConfigProblem, Settings

STATUS = "hapa/status"

class ClientSilent(Exception):
    """The client did not answer a server-to-client request in time (``HapaServer.ask_client``)."""


class _BadRequest:
    """A request whose params could not be read: answered with E4001 instead of being dropped."""

    def __init__(self, msg_id: Any, method: str):
        self.id = msg_id
        self.method = method


class HapaProtocol(LanguageServerProtocol):
    """pygls' protocol, plus an answer for requests with malformed params (the client would wait forever)."""

    command_progress_tokens: dict[Any, Any]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.command_progress_tokens = {}
        self._decoder = json.JSONDecoder(object_hook=self.structure_message)

    # ---- the byte stream (hapa_lsp.stream frames it; this turns a frame into a message or an error answer) ----
    def receive(self, frame: stream.Frame, frames: stream.FrameReader) -> None:
        """Parse one frame and handle it; what cannot be read as one JSON-RPC message is answered with a JSON-RPC
        error (the request's id when it can be read, else null) carrying E4001 and an incident id."""
        ls = self._server
        if frame.skipped:
            err = ls.protocol_error("size", f"a message over hapa.server.maxMessageBytes ({ls.max_message_bytes()} "
                                    f"bytes; this one declared {frame.declared}) was skipped unread")
            self._answer_unreadable(stream.recover_id(frame.body), types.ErrorCodes.InvalidRequest, err)
            return
        body = frame.body
        try:
            text = body.decode("utf-8")
            message, end = self._decoder.raw_decode(text, _WHITESPACE.match(text).end())
        except RecursionError:
            err = ls.protocol_error("nesting", "a message nested deeper than the server reads was not handled")
            self._answer_unreadable(stream.recover_id(body), types.ErrorCodes.InvalidRequest, err)
            return
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            err = ls.protocol_error("stream", f"a message that is not valid JSON ({reason}) was dropped", popup=True)
            self._answer_unreadable(stream.recover_id(body), types.ErrorCodes.ParseError, err)
            return
        tail = text[end:]
        if tail.strip(" \t\r\n"):
            # Content-Length was too long: the rest is the start of the next message.
            frames.unread(tail.encode("utf-8"))
            ls.protocol_error("stream", f"Content-Length {frame.declared} was longer than the message", popup=True)
        if isinstance(message, list):
            err = ls.protocol_error("batch", "a JSON-RPC batch (array) was sent; LSP does not support batches")
            self._answer_unreadable(None, types.ErrorCodes.InvalidRequest, err)
            return
        if not isinstance(message, _BadRequest) and not hasattr(message, "jsonrpc"):
            msg_id = message.get("id") if isinstance(message, dict) and "method" in message else None
            err = ls.protocol_error("invalid", "a message that is not a JSON-RPC 2.0 request, notification or "
                                    "response was sent")
            self._answer_unreadable(msg_id if isinstance(msg_id, (int, str)) else None,
                                    types.ErrorCodes.InvalidRequest, err)
            return
        self.handle_message(message)

    def _answer_unreadable(self, msg_id: Any, code: int, err: errors.HapaError) -> None:
        # Written out by hand: pygls' serializer drops a None id, and JSON-RPC wants "id": null when the id is
        # unknown.
        self._send_data({"jsonrpc": "2.0", "id": msg_id,
                         "error": {"code": int(code), "message": err.message, "data": err.to_data()}})

    def structure_message(self, data: dict[str, Any]):
        """Deserialize a message; a request that does not fit its type becomes a _BadRequest."""
        try:
            return super().structure_message(data)
        except JsonRpcException:
            if isinstance(data, dict) and "id" in data and isinstance(data.get("method"), str):
                return _BadRequest(data["id"], data["method"])
            raise

    def handle_message(self, message: Any):
        """Answer _BadRequest with E4001; everything else as pygls does."""
        if isinstance(message, _BadRequest):
            err = errors.InvalidInput(f"the parameters of {message.method} do not match the LSP specification")
            self._send_response(message.id, error=types.ResponseError(
                code=types.ErrorCodes.InvalidParams, message=err.message, data=err.to_data()))
            return
        params = getattr(message, "params", None)
        if isinstance(params, types.ExecuteCommandParams) and isinstance(message, types.ExecuteCommandRequest):
            # Command arguments go into prompts, the history and incidents: text UTF-8 cannot encode (a lone
            # surrogate such as \ud800, legal as a JSON escape) is rejected here, naming the field.
            where = unencodable_field(params.arguments or [])
            if where is not None:
                err = errors.InvalidInput(f"'{where}' is not valid Unicode text (it holds a lone UTF-16 surrogate, "
                                        "which UTF-8 cannot encode)", field=where)
                self._server.record_incident(err, errors.storable_text(params.command))
                self._send_response(message.id, error=rpc_error(err).to_response_error())
                return
        if isinstance(params, types.ExecuteCommandParams) and params.work_done_token is not None:
            # pygls hands commands only their arguments; keep the client's progress token for the handler.
            self.command_progress_tokens[message.id] = params.work_done_token
        super().handle_message(message)

    # Request accounting for metrics, rate limits and incident resolution (hapa_lsp.features.ops): one place
    # at the protocol level instead of a wrapper around every handler. Both are no-ops until ops subscribes.
    def _handle_request(self, msg_id: Any, method_name: str, params: Any):
        ls = self._server
        label = method_name
        command = getattr(params, "command", None)
        if method_name == types.WORKSPACE_EXECUTE_COMMAND and command in self.fm.commands:
            label = command  # registered names only: a client cannot inflate metric label sets
        gate = getattr(ls, "request_gate", None)
        if gate is not None:
            err = gate(label, params)
            if err is not None:
                self._send_response(msg_id, error=rpc_error(err).to_response_error())
                _notify_request_observers(ls, label, 0.0, "rejected")
                return
        if getattr(ls, "request_observers", None):
            self.__dict__.setdefault("_request_starts", {})[msg_id] = (label, time.perf_counter())
        super()._handle_request(msg_id, method_name, params)
        if msg_id in self._request_futures:  # an async handler: still running
            self._watch(msg_id, label)

    # Every request gets an answer: one still running after its deadline is answered with E5004 and logged with
    # its id, and its handler cancelled. A last resort; every wait inside has its own, shorter timeout.
    def _watch(self, msg_id: Any, label: str) -> None:
        import asyncio

        ls = self._server
        deadline = ls.settings.resilience.request_deadline
        if label in _TYPING_METHODS:
            deadline = deadline / 10
        try:
            asyncio.get_running_loop().call_later(deadline, self._overdue, msg_id, label, deadline)
        except RuntimeError:  # no running loop (a unit test driving the protocol by hand)
            pass

    def _overdue(self, msg_id: Any, label: str, deadline: float) -> None:
        fut = self._request_futures.get(msg_id)
        if fut is None or fut.done():
            return
        from hapa_lsp.log import get_logger

        err = errors.InternalError(f"{label} (request {msg_id}) got no answer within {deadline:g} s")
        get_logger().error("request overdue", request=msg_id, method=label, incident_id=err.incident_id)
        self._server.record_incident(err, label)
        self.__dict__.setdefault("_overdue_errors", {})[msg_id] = err
        fut.cancel()

    def _send_handler_result(self, future: Any, *, msg_id: Any):
        if not future.cancelled() and future.exception() is not None \
                and not isinstance(future.exception(), JsonRpcException):
            # pygls would answer with the exception's text and traceback in data: E5004 with an incident id instead
            # (the traceback goes to the log).
            from hapa_lsp.log import get_logger

            exc = future.exception()
            err = errors.as_hapa_error(exc)
            get_logger().error("request failed", request=msg_id, incident_id=err.incident_id,
                               exc_info=(type(exc), exc, exc.__traceback__))
            if not getattr(err, "recorded", False):
                started = (self.__dict__.get("_request_starts") or {}).get(msg_id)
                self._server.record_incident(err, started[0] if started else "request")
            future = concurrent.futures.Future()
            future.set_exception(rpc_error(err))
        starts = self.__dict__.get("_request_starts")
        started = starts.pop(msg_id, None) if starts else None
        overdue = self.__dict__.get("_overdue_errors")
        err = overdue.pop(msg_id, None) if overdue else None
        if err is not None and future.cancelled():
            self._request_futures.pop(msg_id, None)
            self._send_response(msg_id, error=rpc_error(err).to_response_error())
        else:
            super()._send_handler_result(future, msg_id=msg_id)
        if started is not None:
            status = "cancelled" if future.cancelled() else "error" if future.exception() is not None else "ok"
            _notify_request_observers(self._server, started[0], time.perf_counter() - started[1], status)


_WHITESPACE = re.compile(r"[ \t\r\n]*")
#: Protocol violations of one kind within this many seconds share one incident.
PROTOCOL_INCIDENT_WINDOW_S = 60.0

_TYPING_METHODS = frozenset({types.TEXT_DOCUMENT_INLINE_COMPLETION, types.TEXT_DOCUMENT_COMPLETION,
                             types.TEXT_DOCUMENT_CODE_ACTION})


def _notify_request_observers(ls: Any, label: str, seconds: float, status: str) -> None:
    for obs in getattr(ls, "request_observers", ()):
        try:
            obs(label, seconds, status)
        except Exception:  # noqa: BLE001 - accounting must never cost the client its answer
            pass


def rpc_error(err: errors.HapaError) -> JsonRpcException:
    """A HapaError as the JSON-RPC error a request answers with (catalog data attached)."""
    code = types.ErrorCodes.InvalidParams if err.code in ("E4001", "E4002") else -32001
    if err.code == "E4008":
        code = types.LSPErrorCodes.RequestCancelled
    return JsonRpcException(code=int(code), message=err.message, data=err.to_data())


def unencodable_field(arguments: list[Any]) -> str | None:
    """The first field of command ``arguments`` whose text (value or key) UTF-8 cannot encode, or None.

    Named as the commands name fields: ``user_question``, ``user_profile.style``, ``items[2]`` inside the first
    argument object, ``arguments[1]`` for a later argument. Iterative: a deeply nested argument cannot overflow
    the stack here."""
    stack: list[tuple[Any, str]] = [(a, "" if i == 0 and isinstance(a, dict) else f"arguments[{i}]")
                                    for i, a in reversed(list(enumerate(arguments)))]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if errors.storable_text(value) is not value:
                return path or "arguments[0]"
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                name = errors.storable_text(key) if isinstance(key, str) else str(key)
                child = f"{path}.{name}" if path else name
                if isinstance(key, str) and name is not key:
                    return child
                children.append((item, child))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(value))))
    return None


class HapaServer(LanguageServer):
    """The hapa-lsp language server."""

    def _start_io_async(self, stdin: Any = None, stdout: Any = None) -> None:
        """pygls' stdio loop, with our framing (hapa_lsp.stream) instead of pygls' reader, which never recovers from
        a wrong Content-Length; stdin is read by the event loop itself when it is a pipe."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(self._serve_stdio(stdin or sys.stdin.buffer))
        except BrokenPipeError:
            logging.getLogger("pygls.server").error("Connection to the client is lost! Shutting down the server.")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    async def _serve_stdio(self, src: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            mode = os.fstat(src.fileno()).st_mode
            pipe = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) and not os.isatty(src.fileno())
        except (AttributeError, OSError, ValueError):
            pipe = False
        if pipe:
            # The event loop reads stdin itself (connect_read_pipe), instead of a thread hop per read: the
            # latency of every keystroke's messages. The limit is flow control only (we never readline).
            reader = asyncio.StreamReader(limit=4 * stream.CHUNK, loop=loop)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), src)
            read: Callable[[int], Awaitable[bytes]] = reader.read
        else:
            read_some = getattr(src, "read1", None) or src.read

            def read(n: int) -> Awaitable[bytes]:
                return loop.run_in_executor(self.thread_pool, read_some, n)

        await self.serve_stream(read)

    async def serve_stream(self, read: Callable[[int], Awaitable[bytes]]) -> None:
        """Read framed messages with ``read`` until the input ends or the server stops, and handle each."""
        frames = stream.FrameReader(read, self.max_message_bytes,
                                    lambda what: self.protocol_error("stream", what, popup=True))
        while not self._stop_event.is_set():
            frame = await frames.next()
            if frame is None:
                break
            try:
                self.protocol.receive(frame, frames)
            except Exception as exc:  # noqa: BLE001 - one message failing must not end the session (exit's
                # SystemExit is no Exception: it ends the loop as it should)
                from hapa_lsp.log import get_logger

                get_logger().exception("unable to handle a message")
                try:
                    self.report_server_error(exc, JsonRpcException)
                except Exception:  # noqa: BLE001
                    pass
            # Let the handlers of this message start before the next one is read: a buffered burst must not
            # be drained ahead of them.
            await asyncio.sleep(0)

    def max_message_bytes(self) -> int:
        """``hapa.server.maxMessageBytes``; before the settings are read (the first messages), its environment
        variable or the default."""
        if self._settings_applied:
            return self.settings.server.max_message_bytes
        raw = os.environ.get("HAPA_SERVER_MAX_MESSAGE_BYTES", "").strip()
        if raw.isdigit() and stream.MIN_MAX_MESSAGE_BYTES <= int(raw) <= stream.MAX_MAX_MESSAGE_BYTES:
            return int(raw)
        return stream.DEFAULT_MAX_MESSAGE_BYTES

    def protocol_error(self, kind: str, detail: str, *, popup: bool = False) -> errors.HapaError:
        """The E4001 incident for a violation of the protocol by the client (``kind``: stream, size, nesting,
        batch, invalid): one per kind per minute, so a client that keeps doing it costs one log line and one
        stored incident, not a flood; the same incident id goes into every answer meanwhile."""
        from hapa_lsp.log import get_logger

        now = time.monotonic()
        last = self._protocol_errors.get(kind)
        if last is not None and now - last[1] < PROTOCOL_INCIDENT_WINDOW_S:
            get_logger().debug("protocol violation", kind=kind, detail=detail, incident_id=last[0].incident_id)
            return last[0]
        err = errors.InvalidInput(detail)
        self._protocol_errors[kind] = (err, now)
        self.record_incident(err, "protocol")  # the one log line (warning, with code and incident id)
        if popup and now - self._last_oob_message > 10:
            self._last_oob_message = now
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"hapa-lsp: {err.message}"))
        return err

    def __init__(self, **kwargs: Any):
        super().__init__("hapa-lsp", __version__, protocol_cls=HapaProtocol, **kwargs)
        # The settings tree is built when first needed (after the initialize response), not at start.
        self._settings: Settings | None = None
        self._env_layer: dict[str, Any] | None = None
        self.init_options: Any = None
        self.workspace_settings: Any = None
        self._engine = None
        self._jedi = None
        self._store = None
        self._store_lock = threading.RLock()
        # Server-to-client requests the client left unanswered (see ask_client).
        self.silent_methods: set[str] = set()
        # Operations (hapa_lsp.features.ops): request accounting, the command rate-limit gate, startup hooks.
        self.request_observers: list[Any] = []
        self.request_gate: Any = None
        self.startup_hooks: list[Any] = []
        #: Called with (old, new) settings after every change (the sidecar restarts when its settings moved).
        self.settings_observers: list[Any] = []
        self._incident_log: Any = None
        self._rate_limiter: Any = None
        self.status_state = "ok"
        self._status_code: str | None = None
        self._reported_codes: set[str] = set()
        self.incidents: deque[dict[str, Any]] = deque(maxlen=500)
        self._last_oob_message = 0.0
        self._protocol_errors: dict[str, tuple[errors.HapaError, float]] = {}
        # Incidents before the settings are read wait for them (the database path is one of them).
        self._settings_applied = False
        self._early_incidents: list[tuple[errors.HapaError, str]] = []
        self.started = time.time()
        self.root_path: str | None = None

    # ---- components, created on first use -----------------------------------------------------------------
    @property
    def engine(self):
        """The suggestion engine."""
        if self._engine is None:
            from hapa_lsp.engine import Engine

            self._engine = Engine(self.settings, notify_failure=self.background_failure,
                                  notify_success=self.background_success)
        return self._engine

    @property
    def store(self):
        """The SQLite store at ``hapa.storage.path`` (opened on first use, in a worker thread by callers).

        Read from the event loop and from the incident thread: replacing it is locked, and the replaced store is
        closed on the incident thread, after the writes queued before it (never under a write in progress).
        """
        path = self.settings.storage.path
        with self._store_lock:
            if self._store is None or self._store.path != path:
                from hapa_lsp.store import Store

                old, self._store = self._store, Store(path)
                if old is not None:
                    self.incident_log.submit(old.close)
            return self._store

    @property
    def jedi(self):
        """The jedi worker."""
        if self._jedi is None:
            from hapa_lsp.jedi_client import JediRunner

            self._jedi = JediRunner(max_memory_mb=self.settings.context.jedi_worker_max_mb)
        return self._jedi

    # ---- settings -------------------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The effective settings (defaults until the layers have been applied)."""
        if self._settings is None:
            from hapa_lsp.config import Settings

            self._settings = Settings()
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self._settings = value

    def apply_settings(self, *, init_options: Any = None, workspace: Any = None, environ: Any = None) -> list[
            ConfigProblem]:
        """Re-merge every layer, apply the result, and report what was wrong (once per change)."""
        from hapa_lsp import config, log

        if init_options is not None:
            self.init_options = init_options
        if workspace is not None:
            self.workspace_settings = workspace
        settings, problems = config.load(environ=environ, init_options=self.init_options,
                                         workspace=self.workspace_settings)
        old = self.settings
        self.settings = settings
        self._settings_applied = True
        early, self._early_incidents = self._early_incidents, []
        for err, method in early:
            self.incident_log.record(err, method)
        log.register_secret(settings.backend.api_key)
        log.register_secret(settings.sidecar.api_key)
        log.register_secret(settings.redis.url)
        log.register_url_secret(settings.backend.endpoint)
        log.register_url_secret(settings.redis.url)
        if old.logging != settings.logging:
            log.configure_from_settings(settings.logging)
        if self._engine is not None:
            self._engine.update_settings(settings)
        for obs in list(self.settings_observers):
            try:
                obs(old, settings)
            except Exception:  # noqa: BLE001 - one subscriber failing must not cost the others their update
                from hapa_lsp.log import get_logger

                get_logger().exception("settings observer failed")
        if self._jedi is not None:
            self._jedi.max_memory_mb = settings.context.jedi_worker_max_mb
        # Each layer is re-merged on every change; tell the user about a problem once, not on every re-read.
        seen = getattr(self, "_config_seen", set())
        for p in problems:
            if (p.path, p.source, p.reason) not in seen:
                self._config_problem(p)
        self._config_seen = {(p.path, p.source, p.reason) for p in problems}
        return problems

    def _config_problem(self, problem: ConfigProblem) -> None:
        err = errors.error_class(problem.code)(f"{problem.path} ({problem.source}) {problem.reason}",
                                field=problem.path)
        self.record_incident(err, "configuration")
        msg = f"{problem.message} ({err.incident_id})"
        self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"hapa-lsp: {msg}"))
        self.window_log_message(types.LogMessageParams(types.MessageType.Warning, msg))

    # ---- failures and status --------------------------------------------------------------------------------
    def record_incident(self, err: errors.HapaError, method: str) -> None:
        """Keep the incident in memory, persist it in the store (in a worker thread) and log it."""
        from hapa_lsp.log import get_logger

        rec = {"incident_id": err.incident_id, "error_code": err.code, "method": method, "detail": err.detail,
               "timestamp": time.time(), "status": "open"}
        self.incidents.append(rec)
        get_logger("hapa_lsp.incident").warning("incident", **rec)
        if not self._settings_applied:
            # Not before hapa.storage.path is known: it would go into the default database.
            if len(self._early_incidents) < 100:
                self._early_incidents.append((err, method))
            return
        self.incident_log.record(err, method)

    @property
    def incident_log(self):
        """The persistent incident log (hapa_lsp.ops.incidents) over ``store``."""
        if self._incident_log is None:
            from hapa_lsp.ops.incidents import IncidentLog

            self._incident_log = IncidentLog(lambda: self.store, lambda: self.settings.incidents.retention_days)
        return self._incident_log

    @property
    def rate_limiter(self):
        """Per-feature rate limits (hapa_lsp.ops.ratelimit), following ``hapa.rateLimits``."""
        if self._rate_limiter is None:
            from hapa_lsp.ops.ratelimit import RateLimiter

            self._rate_limiter = RateLimiter(lambda: self.settings.rate_limits)
        return self._rate_limiter

    async def ask_client(self, method: str, params: Any, timeout: float | None = None) -> Any:
        """Send a request to the client and wait at most ``timeout`` seconds (``hapa.resilience.clientTimeout``
        unless given) for its answer.

        Returns the result, or raises ``ClientSilent`` when the client did not answer in time (the caller falls
        back) and the client's error when it answered with one. The request is never cancelled on our side: a late
        answer then lands on a live future instead of an error inside pygls. A method the client left unanswered
        is remembered in ``silent_methods`` (features that can do without it stop asking) and logged once.
        """
        if timeout is None:
            timeout = self.settings.resilience.client_timeout
        fut = self.protocol.send_request_async(method, params)
        done, _ = await asyncio.wait([fut], timeout=timeout)
        if not done:
            if method not in self.silent_methods:
                self.silent_methods.add(method)
                get_logger().warning("the client did not answer a request", method=method, timeout_s=timeout)
            raise ClientSilent(method)
        self.silent_methods.discard(method)
        return fut.result()

    def keep(self, fut: Any) -> Any:
        """Hold a reference to background work until it is done (asyncio keeps only weak ones to tasks)."""
        tasks: set = self.__dict__.setdefault("_kept", set())
        tasks.add(fut)
        fut.add_done_callback(tasks.discard)
        return fut

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` s) for the background work ``keep`` holds: history rows of cancelled or
        code-action generations are written before the process exits."""
        tasks = set(self.__dict__.get("_kept", ()))
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def run_startup_hooks(self) -> None:
        """Run what features registered for after ``initialized`` (the sidecar, incident pruning)."""
        from hapa_lsp.log import get_logger

        for hook in self.startup_hooks:
            try:
                await hook(self)
            except Exception:  # noqa: BLE001 - an optional service failing to start must not stop LSP
                get_logger().exception("startup hook failed", hook=getattr(hook, "__name__", repr(hook)))

    def set_status(self, state: str, message: str, code: str | None = None, incident_id: str | None = None,
                   *, force: bool = False) -> None:
        """Send ``hapa/status`` when the state or code changes (never once per keystroke)."""
        if not force and state == self.status_state and code == self._status_code:
            return
        self.status_state, self._status_code = state, code
        payload: dict[str, Any] = {"state": state, "message": message}
        if code:
            payload["code"] = code
        if incident_id:
            payload["incident_id"] = incident_id
        self.protocol.notify(STATUS, payload)

    def background_failure(self, err: errors.HapaError, request_id: str = "", explicit: bool = False,
                           method: str = "textDocument/inlineCompletion") -> None:
        """A model failure: recorded once, shown in the status; a popup only when nobody asked explicitly
        (an explicit request gets the error as its answer) and once per distinct code until recovery."""
        err.recorded = True  # type: ignore[attr-defined]
        self.record_incident(err, method)
        self.set_status("error" if not err.retryable else "warning", err.message, err.code, err.incident_id)
        if not explicit and err.code not in self._reported_codes:
            self._reported_codes.add(err.code)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"hapa-lsp: {err.message}"))

    def degraded(self, component: str, exc: BaseException, what: str) -> None:
        """An optional part failed (jedi): the answer goes out without it, and the user is told once, with the
        catalog code and an incident id, instead of silently getting less. Each distinct failure is logged."""
        from hapa_lsp.log import get_logger

        detail = f"{type(exc).__name__}: {exc}"
        sig = (component, detail.split("\n", 1)[0][:160])
        seen: set = self.__dict__.setdefault("_degraded_seen", set())
        if sig in seen:
            return
        seen.add(sig)
        err = errors.InternalError(f"{component} failed, {what} ({sig[1]})")
        self.record_incident(err, component)
        get_logger().warning(f"{component} failed", incident_id=err.incident_id, error=detail[:2000])
        if not any(s[0] == component for s in seen - {sig}):
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, f"hapa-lsp: {err.message}"))

    def background_success(self) -> None:
        """A model call worked: clear the error state so the next outage is reported again."""
        if self.status_state != "ok" or self._reported_codes:
            self._reported_codes.clear()
            self.set_status("ok", "model server reachable")

    def report_server_error(self, error: Exception, source: Any):
        """Out-of-band errors (unparsable messages, failing notification handlers): coded, and not a flood."""
        from pygls.exceptions import FeatureRequestError

        if source == FeatureRequestError:
            return
        err = (errors.InvalidInput if isinstance(error, (JsonRpcException, ValueError)) else errors.InternalError)(
            f"{type(error).__name__} while handling a message")
        self.record_incident(err, "protocol")
        now = time.monotonic()
        if now - self._last_oob_message > 10:
            self._last_oob_message = now
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"hapa-lsp: {err.message}"))


def create_server() -> HapaServer:
    """A server with every feature registered."""
    from hapa_lsp.features import register_all

    server = HapaServer()
    register_all(server)
    return server
