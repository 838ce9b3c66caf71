"""HapaServer: the pygls LanguageServer that owns hapa-lsp's components, its settings, status and incidents.

::

    HapaServer
      .protocol      protocol.HapaProtocol (framing, malformed input, accounting, deadlines)
      .settings      config.Settings, re-merged from every layer by apply_settings
      .upstream      upstream.Upstream: backend + cache + breaker + accounting   (built on first use)
      .engine        engine.Engine: the typing path, over .upstream             (built on first use)
      .jedi          jedi_client.JediRunner: the jedi worker process            (built on first use)
      .store         store.Store (SQLite), .incident_log, .rate_limiter          (built on first use)
      .ops           ops.service.Ops: metrics, sidecar, incident pruning         (built here)

Every component is built by the server itself, with what it needs passed to its constructor; nothing is
assigned onto one from outside. The slow ones are built on first use, after the initialize response: the
editor waits for everything start imports (tests/unit/test_startup.py guards the list). Handlers live in
``hapa_lsp.features``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import FeatureRequestError, JsonRpcException
from pygls.lsp.server import LanguageServer

from hapa_lsp import __version__, errors, log, protocol, stream
from hapa_lsp.features import register_all
from hapa_lsp.log import get_logger
from hapa_lsp.next_edit.recorder import EditRecorder
from hapa_lsp.ops.incidents import IncidentLog
from hapa_lsp.ops.service import Ops
from hapa_lsp.protocol import HapaProtocol

if TYPE_CHECKING:
    from hapa_lsp.config import ConfigProblem, Settings
    from hapa_lsp.engine import Engine
    from hapa_lsp.jedi_client import JediRunner
    from hapa_lsp.store import Store
    from hapa_lsp.upstream import Upstream

STATUS = "hapa/status"


class ClientSilent(Exception):
    """The client did not answer a server-to-client request in time (``HapaServer.ask_client``)."""


#: Protocol violations of one kind within this many seconds share one incident.
PROTOCOL_INCIDENT_WINDOW_S = 60.0


class HapaServer(LanguageServer):
    """The hapa-lsp language server."""

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """Serve LSP on stdin/stdout (hapa_lsp.protocol.serve_stdio: our framing, the loop reading the pipe)."""
        protocol.serve_stdio(self, stdin, stdout)

    async def serve_stream(self, read: Callable[[int], Awaitable[bytes]]) -> None:
        """Read framed messages with ``read`` until the input ends or the server stops, and handle each."""
        await protocol.serve_stream(self, read)

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
        # Components, each built by this server on first use (their modules are too slow to import before the
        # initialize response; tests/unit/test_startup.py guards that) and never assigned from outside.
        self._upstream: Upstream | None = None
        self._engine: Engine | None = None
        self._jedi: JediRunner | None = None
        self._store: Store | None = None
        self._store_lock = threading.RLock()
        # Server-to-client requests the client left unanswered (see ask_client).
        self.silent_methods: set[str] = set()
        # Operations (hapa_lsp.ops.service): request accounting, the command rate-limit gate, startup hooks.
        self.request_observers: list[Any] = []
        self.request_gate: Any = None
        self.startup_hooks: list[Any] = []
        #: Generations running now: hapa/status says "busy" while there is one.
        self.busy_generations = 0
        #: Called with (old, new) settings after every change (the sidecar restarts when its settings moved).
        self.settings_observers: list[Any] = []
        #: Told of every didOpen / didChange / didClose after the engine (``did_open(doc)``, ``did_change(doc,
        #: changes)``, ``did_close(uri)``); the next-edit history is one. Each call must cost microseconds.
        self.document_observers: list[Any] = []
        #: Merged into the initialize result's ``capabilities.experimental`` (protocol.HapaProtocol.lsp_initialize).
        self.experimental_capabilities: dict[str, Any] = {}
        #: State a feature module keeps per server (features do not import each other, nor add attributes here).
        self.feature_state: dict[str, Any] = {}
        self._incident_log: Any = None
        self._rate_limiter: Any = None
        self.status_state = "ok"
        self._status_code: str | None = None
        self._reported_codes: set[str] = set()
        self.incidents: deque[dict[str, Any]] = deque(maxlen=500)
        self._last_oob_message = 0.0
        self._protocol_errors: dict[str, tuple[errors.HapaError, float]] = {}
        self._config_seen: set[tuple[str, str, str]] = set()  # configuration problems already reported
        self._degraded_seen: set[tuple[str, str]] = set()  # optional parts' failures already reported
        self._kept: set[Any] = set()  # background work held until done (see keep)
        self._closing: Any = None  # the one close (drain, then aclose) that shutdown, exit and end of input share
        # Incidents before the settings are read wait for them (the database path is one of them).
        self._settings_applied = False
        self._early_incidents: list[tuple[errors.HapaError, str]] = []
        self.started = time.time()
        #: The workspace root (from initialize); the jedi worker and tests files are relative to it.
        self.root_path: str | None = None
        #: Metrics, the sidecar, incident pruning and the ops commands' data (hapa_lsp.ops.service).
        self.ops = Ops(self)
        self.startup_hooks.append(self.ops.start)
        #: What the user changed (next-edit prompts, recent edits in inline prompts), fed by every document event.
        self.edits = EditRecorder(lambda: self.settings, lambda: self.root_path)
        self.document_observers.append(self.edits)
        self.settings_observers.append(self.edits.configure)

    # ---- components, created on first use -----------------------------------------------------------------
    @property
    def upstream(self) -> Upstream:
        """The model backend, response cache and call accounting, shared by the engine and the generations."""
        if self._upstream is None:
            # deferred: not imported before initialize (tests/unit/test_startup.py)
            from hapa_lsp.upstream import Upstream

            self._upstream = Upstream(self.settings)
        return self._upstream

    @property
    def engine(self) -> Engine:
        """The suggestion engine (the typing path)."""
        if self._engine is None:
            # deferred: not imported before initialize (tests/unit/test_startup.py)
            from hapa_lsp.engine import Engine

            self._engine = Engine(self.settings, self.upstream, workspace=self._open_workspace,
                                  jedi=lambda: self.jedi, root=lambda: self.root_path, model_gate=self.typing_gate,
                                  notify_failure=self.background_failure, notify_success=self.background_success,
                                  recent_edits=lambda uri: self.edits.recent(self.settings.context.recent_edits, uri))
        return self._engine

    def _open_workspace(self) -> Any:
        """pygls' workspace once initialize created it, else None."""
        try:
            return self.workspace
        except RuntimeError:
            return None

    def typing_gate(self, explicit: bool) -> bool:
        """Whether a typing-path model call (ghost text, next edit) may go out now: rate limits count model calls,
        not keystrokes, so cache hits and superseded requests are free."""
        return self.rate_limiter.check(types.TEXT_DOCUMENT_INLINE_COMPLETION, quiet=not explicit)

    @property
    def components(self) -> dict[str, Any]:
        """The components built so far (None for those nobody used yet): status and shutdown must not build one."""
        return {"upstream": self._upstream, "engine": self._engine, "jedi": self._jedi}

    async def aclose(self) -> None:
        """Stop what the server started: the ops services, the model client and cache, the jedi worker."""
        await self.ops.stop()  # the sidecar's port is free before the editor starts the next server
        if self._engine is not None:
            await self._engine.flush()  # facts resolved this session reach the on-disk store
        if self._upstream is not None:
            await self._upstream.aclose()
        if self._jedi is not None:
            await self._jedi.aclose()

    @property
    def store(self):
        """The SQLite store at ``hapa.storage.path`` (opened on first use, in a worker thread by callers).

        Read from the event loop and from the incident thread: replacing it is locked, and the replaced store is
        closed on the incident thread, after the writes queued before it (never under a write in progress).
        """
        path = self.settings.storage.path
        with self._store_lock:
            if self._store is None or self._store.path != path:
                # deferred: not imported before initialize (tests/unit/test_startup.py)
                from hapa_lsp.store import Store

                old, self._store = self._store, Store(path)
                if old is not None:
                    self.incident_log.submit(old.close)
            return self._store

    @property
    def jedi(self) -> JediRunner:
        """The jedi worker."""
        if self._jedi is None:
            # deferred: not imported before initialize (tests/unit/test_startup.py)
            from hapa_lsp.jedi_client import JediRunner

            self._jedi = JediRunner(max_memory_mb=self.settings.context.jedi_worker_max_mb)
        return self._jedi

    # ---- settings -------------------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The effective settings (defaults until the layers have been applied)."""
        if self._settings is None:
            # deferred: not imported before initialize (tests/unit/test_startup.py)
            from hapa_lsp.config import Settings

            self._settings = Settings()
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self._settings = value

    def apply_settings(self, *, init_options: Any = None, workspace: Any = None, environ: Any = None) -> list[
            ConfigProblem]:
        """Re-merge every layer, apply the result, and report what was wrong (once per change)."""
        # deferred: not imported before initialize (tests/unit/test_startup.py)
        from hapa_lsp import config

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
        if self._upstream is not None:
            self._upstream.update_settings(settings)
        if self._engine is not None:
            self._engine.update_settings(settings)
        for obs in list(self.settings_observers):
            try:
                obs(old, settings)
            except Exception:  # noqa: BLE001 - one subscriber failing must not cost the others their update
                get_logger().exception("settings observer failed")
        if self._jedi is not None:
            self._jedi.max_memory_mb = settings.context.jedi_worker_max_mb
        # Each layer is re-merged on every change; tell the user about a problem once, not on every re-read.
        seen = self._config_seen
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
            self._incident_log = IncidentLog(lambda: self.store, lambda: self.settings.incidents.retention_days)
        return self._incident_log

    @property
    def rate_limiter(self):
        """Per-feature rate limits (hapa_lsp.ops.ratelimit), following ``hapa.rateLimits``."""
        if self._rate_limiter is None:
            # deferred: not imported before initialize (tests/unit/test_startup.py)
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
        tasks = self._kept
        tasks.add(fut)
        fut.add_done_callback(tasks.discard)
        return fut

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` s in all) for the work ``keep`` holds: generations still running or being
        cancelled, and the history rows they write on the way out, before the process exits. Work kept while
        waiting (a cancelled generation schedules its row only once its cancellation has run) is waited for too."""
        deadline = time.monotonic() + timeout
        me = asyncio.current_task()
        while True:
            tasks = {t for t in self._kept if not t.done() and t is not me}
            left = deadline - time.monotonic()
            if not tasks or left <= 0:
                if tasks:
                    get_logger().warning("work still running at exit", tasks=len(tasks), timeout_s=timeout)
                return
            await asyncio.wait(tasks, timeout=left)

    async def close(self) -> None:
        """Drain, then stop what the server started; shutdown, exit and the end of input all come here, and the
        close runs once however many of them arrive (an editor quitting sends shutdown and exit in one write)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self.drain()
        await self.aclose()

    async def run_startup_hooks(self) -> None:
        """Run what features registered for after ``initialized`` (the sidecar, incident pruning)."""
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
                           method: str | None = None) -> None:
        """A model failure: recorded once, shown in the status; a popup only when nobody asked explicitly
        (an explicit request gets the error as its answer) and once per distinct code until recovery.
        ``method``: by default the request whose handler started the model call (``bind_request``), so that a
        completion list's AI item is not recorded as an inline completion."""
        if method is None:
            import structlog  # loaded by then: the request bound its id (features.common.bind_request)

            method = structlog.contextvars.get_contextvars().get("method") or types.TEXT_DOCUMENT_INLINE_COMPLETION
        err.recorded = True  # type: ignore[attr-defined]
        self.record_incident(err, method)
        self.set_status("error" if not err.retryable else "warning", err.message, err.code, err.incident_id)
        if not explicit and err.code not in self._reported_codes:
            self._reported_codes.add(err.code)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"hapa-lsp: {err.message}"))

    def degraded(self, component: str, exc: BaseException, what: str) -> None:
        """An optional part failed (jedi): the answer goes out without it, and the user is told once, with the
        catalog code and an incident id, instead of silently getting less. Each distinct failure is logged."""
        detail = f"{type(exc).__name__}: {exc}"
        sig = (component, detail.split("\n", 1)[0][:160])
        seen = self._degraded_seen
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
    server = HapaServer()
    register_all(server)
    return server
