"""Shared helpers for handlers: finding open documents and converting positions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.context import exclusion_error
from hapa_lsp.documents import find_open, name_of

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.server import HapaServer


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
        import importlib

        return getattr(importlib.import_module(self._name), attr)


def bind_request(request_id: str, method: str) -> None:
    """Bind the request id to every log line written while handling this request (pygls runs each
    message in its own contextvars context, and tasks the handler starts inherit it)."""
    import structlog

    structlog.contextvars.bind_contextvars(request_id=request_id, method=method)


def after_response(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` once the current request's response has been written, not before it.

    pygls writes a response from the handler task's done callback, scheduled when the handler returns;
    a callback that reschedules itself once runs in the loop iteration after that one. Bookkeeping such as
    the per-request log line then costs the user nothing.
    """
    import asyncio

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
