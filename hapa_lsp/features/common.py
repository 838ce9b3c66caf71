"""What every handler module shares: the error boundary, command arguments, open documents, positions, and the
names (commands, notifications) one surface hands to another.

Feature modules import this one and never each other; a new surface is one module with a ``register(server)``
and one line in ``features/__init__.py``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from hapa_lsp import errors
from hapa_lsp.context import exclusion_error
from hapa_lsp.documents import find_open, name_of
from hapa_lsp.features.args import structure
from hapa_lsp.log import get_logger
from hapa_lsp.protocol import rpc_error

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.engine import Suggestion
    from hapa_lsp.server import HapaServer

T = TypeVar("T")

# ---- names one surface hands to another (commands a client runs from an answer, notifications) ------------------
ACCEPT_COMMAND = "hapa.didAcceptCompletion"
GENERATE = "hapa.generateCode"
AGENT_RUN = "hapa.agent.run"
AGENT_LIST = "hapa.agent.list"
EXPLAIN = "hapa.explain"
VALIDATE = "hapa.validateCode"
SHOW_ISSUES = "hapa.showIssues"
HISTORY_LIST = "hapa.history.list"
HISTORY_CLEAR = "hapa.history.clear"
FEEDBACK = "hapa.feedback"
FEEDBACK_STATS = "hapa.feedback.stats"
DID_SHOW = "hapa.didShowCompletion"
DID_PARTIAL = "hapa.didPartiallyAcceptCompletion"
APPLY_CODE_ACTION = "hapa.codeAction.apply"
# Next edit suggestions, in the names of GitHub Copilot's language server (clients that speak it work unchanged).
INLINE_EDIT = "textDocument/copilotInlineEdit"
INLINE_EDIT_SHOWN = "textDocument/didShowInlineEdit"
INLINE_EDIT_ACCEPT = "hapa.didAcceptInlineEdit"


def open_document(ls: HapaServer, uri: str) -> TextDocument:
    """The editor's copy of an open document; E4006 when the editor never opened it (disk is not read)."""
    doc = find_open(ls.workspace, uri)
    if doc is None:
        raise errors.DocumentNotOpen(f"{uri} is not open in the editor")
    return doc


def document_for_model(ls: HapaServer, uri: str) -> TextDocument:
    """An open document whose text is about to be sent to the model: E4006 when it is not open, E4007 when
    ``hapa.context.excludeGlobs`` excludes it (a ``.env`` never leaves the machine, whichever command asks)."""
    doc = open_document(ls, uri)
    excluded = exclusion_error(name_of(doc), ls.settings.context.exclude_globs)
    if excluded is not None:
        raise excluded
    return doc


class LazyModule:
    """A module imported on first attribute access: feature modules register their handlers at start
    without paying for what those handlers import until one of them runs."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


def bind_request(request_id: str, method: str) -> None:
    """Bind the request id to every log line written while handling this request (pygls runs each
    message in its own contextvars context, and tasks the handler starts inherit it)."""
    import structlog  # not part of start (tests/unit/test_startup.py); loaded by the first request's log line

    structlog.contextvars.bind_contextvars(request_id=request_id, method=method)


def after_response(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` once the current request's response has been written, not before it.

    pygls writes a response from the handler task's done callback, scheduled when the handler returns;
    a callback that reschedules itself once runs in the loop iteration after that one. Bookkeeping such as
    the per-request log line then costs the user nothing.
    """
    loop = asyncio.get_running_loop()
    loop.call_soon(lambda: loop.call_soon(lambda: fn(*args, **kwargs)))


def position_encoding(ls: HapaServer) -> str:
    """The position encoding negotiated at initialize ("utf-16", "utf-8" or "utf-32")."""
    enc = ls.workspace.position_encoding
    return str(getattr(enc, "value", enc) or "utf-16")


def language_of(doc: TextDocument) -> str:
    """The document's language id, guessed from the file name when the editor sent none."""
    if doc.language_id:
        return doc.language_id
    return language_for(name_of(doc))


def language_for(name: str) -> str:
    """The language of a file, from its name."""
    name = name.lower()
    for ext, lang in ((".py", "python"), (".pyi", "python"), (".js", "javascript"), (".ts", "typescript"),
                      (".rs", "rust"), (".go", "go"), (".java", "java"), (".c", "c"), (".cpp", "cpp"),
                      (".rb", "ruby"), (".lua", "lua"), (".sh", "shellscript")):
        if name.endswith(ext):
            return lang
    return "plaintext"


# ---- the error boundary ------------------------------------------------------------------------------------------
def boundary(method: str, *, quiet: Callable[..., bool] | None = None, fallback: Any = None,
             notification: bool = False) -> Callable[[Any], Any]:
    """The one error boundary of every handler (``@boundary(method)`` under ``@server.feature``/``command``).

    The rules, the same everywhere:

    - a HapaError is recorded as an incident once (not when it is already ``recorded``, and never for
      DocumentNotOpen: an editor asking about a document it did not open is its state, not an incident), then
      answered as a JSON-RPC error carrying the catalog data (``protocol.rpc_error``);
    - anything else is a bug: logged with its traceback, recorded as E5004 (InternalError), answered without
      its text;
    - when ``quiet(*args)`` is true (automatic requests: ghost text nobody asked for) nothing is answered as an
      error: the handler returns ``fallback``; a bug is still reported (status, one popup) but a HapaError was
      already told to the user where it happened (a model failure by the engine);
    - a ``notification`` has nobody to answer: failures are recorded and dropped.

    Cancellation passes through untouched (it is not an Exception).
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            async def handler(ls, *args):  # type: ignore[no-untyped-def]  # pygls reads `ls` by its name
                try:
                    return await fn(ls, *args)
                except Exception as exc:  # noqa: BLE001 - the boundary: every failure gets one treatment
                    return _failed(ls, method, exc, quiet is not None and quiet(*args), fallback, notification)
        else:
            def handler(ls, *args):  # type: ignore[no-untyped-def]
                try:
                    return fn(ls, *args)
                except Exception as exc:  # noqa: BLE001
                    return _failed(ls, method, exc, quiet is not None and quiet(*args), fallback, notification)
        # No functools.wraps: pygls resolves a command handler's annotations, and ours name types it cannot see.
        handler.__name__, handler.__qualname__, handler.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        handler.boundary = method  # type: ignore[attr-defined]  # what tests/unit/test_boundary.py looks for
        return handler

    return decorate


def _failed(ls: HapaServer, method: str, exc: Exception, quiet: bool, fallback: Any, notification: bool) -> Any:
    if isinstance(exc, JsonRpcException):
        raise exc  # already an answer
    if isinstance(exc, errors.HapaError):
        err = exc
        if quiet:
            return fallback
        if not err.recorded and not isinstance(err, errors.DocumentNotOpen):
            ls.record_incident(err, method)
            err.recorded = True
    else:
        err = errors.as_hapa_error(exc)
        get_logger().error(f"{method} failed", incident_id=err.incident_id,
                           exc_info=(type(exc), exc, exc.__traceback__))
        if quiet:
            ls.background_failure(err, method=method)  # recorded, in the status, one popup: typing goes on
            return fallback
        ls.record_incident(err, method)
        err.recorded = True
    if notification:
        return None
    raise rpc_error(err) from exc


def arguments(ls: HapaServer, args: tuple[Any, ...], cls: type[T], command: str) -> T:
    """A command's JSON object argument as its attrs class (``features.args``), structured by pygls' converter."""
    return structure(ls.protocol.converter, args, cls, command)


def first_object(args: tuple[Any, ...], command: str) -> dict[str, Any]:
    """The command's single JSON object argument (``{}`` when none), unchecked; E4001 for anything else."""
    if not args:
        return {}
    if len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    raise errors.InvalidInput(f"{command} takes one JSON object argument", field="arguments")


def accept_command(sug: Suggestion, uri: str, language: str) -> types.Command:
    """The command an editor runs when the user accepts a suggestion (feedback and acceptance rate)."""
    return types.Command(title="Accept hapa suggestion", command=ACCEPT_COMMAND,
                         arguments=[{"request_id": sug.request_id, "uri": uri, "language": language,
                                     "model": sug.model, "source": sug.source, "length": len(sug.text)}])
