"""The pygls / lsprotocol adaptation, and the only module that touches pygls' private names.

::

    hapa_lsp/protocol.py
      HapaProtocol          pygls' LanguageServerProtocol plus: a frame -> message or an E4001 answer (receive),
                            malformed params answered instead of dropped, command arguments UTF-8 cannot encode
                            rejected, request accounting and the rate-limit gate, the request deadline (E5004),
                            no traceback in any answer; to_json / from_json / follow_cancellation for features
      serve_stdio           the stdio transport over hapa_lsp.stream's framing (pygls' reader never recovers)
      rpc_error             a HapaError as the JSON-RPC error a request answers with
      FastTextDocument      pygls' TextDocument with splice edits; install_fast_documents puts it in a Workspace
      client_supports ...   client capability checks through pygls.capabilities.get_capability

Every private pygls attribute used here (``_converter``, ``_request_futures``, ``_send_data``,
``_send_response``, ``_handle_request``, ``_send_handler_result``, ``_server``, ``LanguageServer._stop_event``,
``Workspace._create_text_document`` / ``_sync_kind`` / ``_position_codec``, ``TextDocument._source`` and its
``_apply_*_change``) is guarded by a test in ``tests/unit/test_protocol.py``: a pygls release that changes one
fails there, by name, not somewhere in an editor session.
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
import types as _pytypes
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.workspace import TextDocument

from hapa_lsp import errors, stream
from hapa_lsp.context import has_lone_cr, remember_line_breaks, split_at, split_near
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from pygls.workspace import Workspace


class _BadRequest:
    """A request whose params could not be read: answered with E4001 instead of being dropped."""

    def __init__(self, msg_id: Any, method: str):
        self.id = msg_id
        self.method = method


@attrs.define
class CustomRequest:
    """A request for a method lsprotocol does not know (Copilot's next-edit method): its params stay plain JSON,
    for the handler to structure and check (``features.args``)."""

    id: int | str
    method: str
    params: Any = None
    jsonrpc: str = "2.0"


@attrs.define
class CustomNotification:
    """A notification for a method lsprotocol does not know; params stay plain JSON."""

    method: str
    params: Any = None
    jsonrpc: str = "2.0"


_CUSTOM_METHODS: dict[str, type] = {}


def accept_method(method: str, *, notification: bool = False, typing: bool = False) -> None:
    """Let clients call ``method`` though lsprotocol does not know it (pygls would hand the handler an opaque
    namedtuple); ``typing`` methods get the typing path's deadline (a tenth of the request deadline)."""
    _CUSTOM_METHODS[method] = CustomNotification if notification else CustomRequest
    if typing:
        _TYPING_METHODS.add(method)


class HapaProtocol(LanguageServerProtocol):
    """pygls' protocol, plus an answer for requests with malformed params (the client would wait forever)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: The client's work-done token of each running workspace/executeCommand, by request id.
        self.command_progress_tokens: dict[Any, Any] = {}
        self._decoder = json.JSONDecoder(object_hook=self.structure_message)
        self._request_starts: dict[Any, tuple[str, float]] = {}
        self._overdue_errors: dict[Any, errors.HapaError] = {}
        #: When the user last typed (a typing request, didOpen or didChange): background start-up work waits for
        #: a pause (``hapa_lsp.features.lifecycle``).
        self.last_typing_at = 0.0

    # ---- what the rest of hapa-lsp may ask of pygls' internals (each guarded by tests/unit/test_protocol.py) ----
    def to_json(self, obj: Any) -> Any:
        """``obj`` (an lsprotocol type) as plain JSON values, the way pygls writes it."""
        return self._converter.unstructure(obj)

    @property
    def converter(self) -> Any:
        """pygls' cattrs converter (features.args derives the strict one for command arguments from it)."""
        return self._converter

    def from_json(self, data: Any, cls: Any) -> Any:
        """Plain JSON ``data`` structured as ``cls`` (an lsprotocol or attrs class) with pygls' converter; raises
        cattrs' errors (``cattrs.transform_error`` turns them into field paths)."""
        return self._converter.structure(data, cls)

    def follow_cancellation(self) -> Any:
        """Make ``$/cancelRequest`` for the request being handled cancel the current task (pygls only cancels its
        own wrapper of it); returns the client's work-done token when the request is a command that sent one."""
        msg_id = self.msg_id
        if msg_id is None:
            return None
        task = asyncio.current_task()
        fut = self._request_futures.get(msg_id)
        if fut is not None and task is not None:
            loop = asyncio.get_running_loop()
            fut.add_done_callback(lambda f: f.cancelled() and loop.call_soon_threadsafe(task.cancel))
        return self.command_progress_tokens.pop(msg_id, None)

    def get_message_type(self, method: str) -> Any:
        """The message class of ``method``: ours for the methods ``accept_method`` added, else lsprotocol's."""
        custom = _CUSTOM_METHODS.get(method)
        return custom if custom is not None else super().get_message_type(method)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        """pygls' initialize, plus the server's ``experimental`` capabilities (pygls builds none)."""
        result = yield from super().lsp_initialize(params)
        extra = getattr(self._server, "experimental_capabilities", None)
        if extra and result is not None:
            mine = result.capabilities.experimental
            result.capabilities.experimental = {**(mine if isinstance(mine, dict) else {}), **extra}
        return result

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
        if getattr(message, "method", None) in _TYPING_ACTIVITY:
            self.last_typing_at = time.monotonic()
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
        gate = ls.request_gate
        if gate is not None:
            err = gate(label, params)
            if err is not None:
                self._send_response(msg_id, error=rpc_error(err).to_response_error())
                _notify_request_observers(ls, label, 0.0, "rejected")
                return
        if ls.request_observers:
            self._request_starts[msg_id] = (label, time.perf_counter())
        super()._handle_request(msg_id, method_name, params)
        if msg_id in self._request_futures:  # an async handler: still running
            self._watch(msg_id, label)

    # Every request gets an answer: one still running after its deadline is answered with E5004 and logged with
    # its id, and its handler cancelled. A last resort; every wait inside has its own, shorter timeout.
    def _watch(self, msg_id: Any, label: str) -> None:
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
        err = errors.InternalError(f"{label} (request {msg_id}) got no answer within {deadline:g} s")
        get_logger().error("request overdue", request=msg_id, method=label, incident_id=err.incident_id)
        self._server.record_incident(err, label)
        self._overdue_errors[msg_id] = err
        fut.cancel()

    def _send_handler_result(self, future: Any, *, msg_id: Any):
        if not future.cancelled() and future.exception() is not None \
                and not isinstance(future.exception(), JsonRpcException):
            # pygls would answer with the exception's text and traceback in data: E5004 with an incident id instead
            # (the traceback goes to the log).
            exc = future.exception()
            err = errors.as_hapa_error(exc)
            get_logger().error("request failed", request=msg_id, incident_id=err.incident_id,
                               exc_info=(type(exc), exc, exc.__traceback__))
            if not err.recorded:
                started = self._request_starts.get(msg_id)
                self._server.record_incident(err, started[0] if started else "request")
            future = concurrent.futures.Future()
            future.set_exception(rpc_error(err))
        started = self._request_starts.pop(msg_id, None)
        err = self._overdue_errors.pop(msg_id, None)
        if err is not None and future.cancelled():
            self._request_futures.pop(msg_id, None)
            self._send_response(msg_id, error=rpc_error(err).to_response_error())
        else:
            super()._send_handler_result(future, msg_id=msg_id)
        if started is not None:
            status = "cancelled" if future.cancelled() else "error" if future.exception() is not None else "ok"
            _notify_request_observers(self._server, started[0], time.perf_counter() - started[1], status)



_WHITESPACE = re.compile(r"[ \t\r\n]*")
_TYPING_METHODS = {types.TEXT_DOCUMENT_INLINE_COMPLETION, types.TEXT_DOCUMENT_COMPLETION,
                   types.TEXT_DOCUMENT_CODE_ACTION}  # and the methods accept_method(typing=True) adds
_TYPING_ACTIVITY = _TYPING_METHODS | {types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE}


def _notify_request_observers(ls: Any, label: str, seconds: float, status: str) -> None:
    for obs in ls.request_observers:
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


# ---- the stdio transport ------------------------------------------------------------------------------------------
def serve_stdio(server: Any, stdin: Any = None, stdout: Any = None) -> None:
    """pygls' stdio loop, with our framing (hapa_lsp.stream) instead of pygls' reader, which never recovers from
    a wrong Content-Length; stdin is read by the event loop itself when it is a pipe."""
    server._stop_event = threading.Event()  # what pygls' shutdown/exit set to end the loop
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
    try:
        asyncio.run(_serve_stdio(server, stdin or sys.stdin.buffer))
    except BrokenPipeError:
        logging.getLogger("pygls.server").error("Connection to the client is lost! Shutting down the server.")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()


async def _serve_stdio(server: Any, src: Any) -> None:
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
            return loop.run_in_executor(server.thread_pool, read_some, n)

    try:
        await serve_stream(server, read)
    except SystemExit:
        # pygls' exit handler ends the process from inside ``receive``, possibly while shutdown is still
        # draining (an editor that quits sends cancel, shutdown and exit in one write). No user exit handler:
        # pygls runs one as a sub-request, which shutdown's own ending cancels, and then never exits.
        await server.close()
        raise
    # The input ended (the editor quit or crashed without exit): finish the history rows and stop the services
    # before asyncio.run cancels what is left.
    await server.close()


async def serve_stream(server: Any, read: Callable[[int], Awaitable[bytes]]) -> None:
    """Read framed messages with ``read`` until the input ends or the server stops, and handle each."""
    frames = stream.FrameReader(read, server.max_message_bytes,
                                lambda what: server.protocol_error("stream", what, popup=True))
    while server._stop_event is None or not server._stop_event.is_set():
        frame = await frames.next()
        if frame is None:
            break
        try:
            server.protocol.receive(frame, frames)
        except Exception as exc:  # noqa: BLE001 - one message failing must not end the session (exit's
            # SystemExit is no Exception: it ends the loop as it should)
            get_logger().exception("unable to handle a message")
            try:
                server.report_server_error(exc, JsonRpcException)
            except Exception:  # noqa: BLE001
                pass
        # Let the handlers of this message start before the next one is read: a buffered burst must not
        # be drained ahead of them.
        await asyncio.sleep(0)


# ---- client capabilities -------------------------------------------------------------------------------------------
def client_supports(ls: Any, field: str) -> bool:
    """Whether the client announced capability ``field`` (a dotted path into ClientCapabilities, e.g.
    ``window.work_done_progress``); pygls' get_capability walks it."""
    return bool(get_capability(ls.client_capabilities, field, False))


def supports_document_changes(ls: Any) -> bool:
    """Whether a WorkspaceEdit may use documentChanges (versioned edits, CreateFile)."""
    return client_supports(ls, "workspace.workspace_edit.document_changes") or (
        types.ResourceOperationKind.Create in (
            get_capability(ls.client_capabilities, "workspace.workspace_edit.resource_operations", None) or ()))


def resolve_supports(ls: Any, prop: str) -> bool:
    """Whether the client resolves code actions lazily for property ``prop`` (``edit``)."""
    props = get_capability(ls.client_capabilities, "text_document.code_action.resolve_support.properties", None)
    return bool(props and prop in props)


class FastTextDocument(TextDocument):
    """A TextDocument whose incremental edits cost a splice, not a rebuild."""

    _hint: tuple[int, int] | None = None  # (line, offset of its start) where the last edit began

    def _encoding(self) -> str:
        enc = self._position_codec.encoding
        return str(getattr(enc, "value", enc) or "utf-16")

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        text = self.source
        enc = self._encoding()
        rng = change.range
        hint = self._hint
        if hint is None:
            start = split_at(text, rng.start.line, rng.start.character, enc)
        else:
            start = split_near(text, rng.start.line, rng.start.character, enc, hint[0], hint[1])
        start_line_offset = start.offset - start.character
        if (rng.end.line, rng.end.character) == (rng.start.line, rng.start.character):
            end_offset = start.offset
        else:
            end = split_near(text, rng.end.line, rng.end.character, enc, start.line, start_line_offset)
            end_offset = max(start.offset, end.offset)
        self._source = text[: start.offset] + change.text + text[end_offset:]
        # A lone CR (a line break for LSP) can only appear through the new text or where the edit joins
        # a CR to what follows: everything else keeps the old answer, with no scan of the document.
        if (not has_lone_cr(text) and "\r" not in change.text
                and not (start.offset > 0 and text[start.offset - 1] == "\r")):
            remember_line_breaks(self._source, False)
        # The edit began on this line, so the line's start did not move.
        self._hint = (start.line, start_line_offset)

    def _apply_full_change(self, change: types.TextDocumentContentChangeEvent) -> None:
        self._hint = None
        super()._apply_full_change(change)


def install_fast_documents(workspace: Workspace) -> None:
    """Make ``workspace`` create FastTextDocuments for the documents the editor opens."""

    def create(self: Any, doc_uri: str, source: str | None = None, version: int | None = None,
               language_id: str | None = None) -> TextDocument:
        return FastTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                                sync_kind=self._sync_kind, position_codec=self._position_codec)

    # pygls has no public hook for the document class; this is the method its Workspace calls.
    workspace._create_text_document = _pytypes.MethodType(create, workspace)  # type: ignore[method-assign]
