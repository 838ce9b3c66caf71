"""The edit-history recorder: fed from didOpen / didChange / didClose through ``HapaServer.document_observers``,
read by next-edit prompts (the whole history) and by inline prompts (the latest edited regions)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hapa_lsp.context import exclusion_error
from hapa_lsp.documents import doc_key, name_of

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.config import Settings
    from hapa_lsp.next_edit.formats import Event
    from hapa_lsp.next_edit.history import EditHistory


class EditRecorder:
    """The document observer that records the edit history (excluded documents never reach it).

    One per server (``HapaServer.edits``): next-edit prompts read the whole history, inline prompts the latest
    regions (``recent``). It records while either uses it (``hapa.nextEdit.enabled``, ``hapa.context.recentEdits``).
    """

    def __init__(self, settings: Callable[[], Settings], root: Callable[[], str | None]):
        self._settings = settings
        self._root = root
        self._history: EditHistory | None = None  # built with the first document (not at start: it reads settings)
        self._excluded: dict[str, bool] = {}
        self._names: dict[str, str] = {}  # document key -> the name exclusion globs are matched against
        self._shown: dict[str, str] = {}  # document URI -> its name in prompts
        #: Told the document key after each recorded change / close (the next-edit engine drops stale work).
        self.change_listeners: list[Callable[[str], None]] = []
        self.close_listeners: list[Callable[[str], None]] = []

    def recording(self) -> bool:
        """Whether anything reads the history now (then didChange costs a reference to the new text)."""
        s = self._settings()
        return s.next_edit.enabled or s.context.recent_edits > 0

    def recent(self, limit: int, current: str | None = None) -> tuple[Event, ...]:
        """The ``limit`` latest edited regions, newest last, for an inline prompt in document ``current`` (its
        change in progress is left out: the window shows it); () while not recording."""
        if self._history is None or limit <= 0 or not self.recording():
            return ()
        return self._history.recent(limit, skip_open_of=current)

    @property
    def history(self) -> EditHistory:
        if self._history is None:
            # deferred: the server builds the recorder before initialize; the history (difflib, the prompt
            # formats) is needed with the first recorded document.
            from hapa_lsp.next_edit.history import EditHistory

            self._history = EditHistory()
            self.configure()
        return self._history

    def configure(self, *_: Any) -> None:
        """Apply the settings (bounds, exclusions) to the history; documents now excluded are forgotten."""
        if self._history is None:
            return
        s = self._settings()
        ne = s.next_edit
        self.history.configure(max_events=ne.history_events,
                               max_chars=int(ne.history_max_tokens * s.context.chars_per_token),
                               pause_s=ne.history_pause_ms / 1000)
        self._excluded.clear()  # the globs may have changed
        for key, name in list(self._names.items()):
            if self.excluded(key, name):
                self.history.forget(key)

    def excluded(self, key: str, path: str) -> bool:
        """Whether ``hapa.context.excludeGlobs`` excludes the document (cached per document until they change)."""
        self._names[key] = path
        hit = self._excluded.get(key)
        if hit is None:
            hit = self._excluded[key] = exclusion_error(path, self._settings().context.exclude_globs) is not None
        return hit

    def shown_path(self, doc: TextDocument) -> str:
        """The document's name in prompts: relative to the workspace root when inside it (kept per document: a
        keystroke costs a dict lookup)."""
        key = doc.uri
        shown = self._shown.get(key)
        if shown is None:
            shown = self._shown[key] = self._relative(name_of(doc))
        return shown

    def _relative(self, name: str) -> str:
        root = self._root()
        if root and os.path.isabs(name):
            try:
                rel = os.path.relpath(name, root)
            except ValueError:  # another drive
                return name
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        return name

    def did_open(self, doc: TextDocument) -> None:
        key = doc_key(doc.uri)
        if self.recording() and not self.excluded(key, name_of(doc)):
            self.history.opened(key, self.shown_path(doc), doc.source)

    def did_change(self, doc: TextDocument, changes: Any) -> None:
        key = doc_key(doc.uri)
        if not self.recording() or self.excluded(key, name_of(doc)):
            return
        line = None
        if changes:
            rng = getattr(changes[0], "range", None)
            line = rng.start.line if rng is not None else None
        self.history.changed(key, self.shown_path(doc), doc.source, line)
        for listener in self.change_listeners:
            listener(key)

    def did_close(self, key: str) -> None:
        self.history.closed(key)
        self._excluded.pop(key, None)
        self._names.pop(key, None)
        self._shown = {u: p for u, p in self._shown.items() if doc_key(u) != key}
        for listener in self.close_listeners:
            listener(key)
