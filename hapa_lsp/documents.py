"""Open documents: their identity (one place decides it), and a TextDocument whose edits cost a splice.

Identity: editors send URIs percent-escaped (``file:///tmp/my%20project/a.py``; VS Code on Windows always
``file:///c%3A/Users/...``), and pygls keys its open documents by the unquoted form. ``doc_key`` is that form,
with a Windows drive letter lower-cased; ``find_open`` is the only lookup of an open document; ``fs_path`` is
the file a document is on disk, or None for ``untitled:``, notebook cells and other non-``file`` schemes, which
get AI completion from the editor's text but nothing read from disk. Nothing else compares raw URI strings.

Edits: pygls applies every keystroke by splitting the whole document into lines and writing them back one by
one through a StringIO: ~2 ms per keystroke on a 4,600-line file, on the event loop. Here an edit finds
its two offsets by walking from the line the previous edit touched (its start never moves when the edit
is at or below it) and splices the string once.
"""

from __future__ import annotations

import re
import types as _pytypes
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument

from hapa_lsp.context import has_lone_cr, remember_line_breaks, split_at, split_near

if TYPE_CHECKING:
    from pygls.workspace import Workspace


_DRIVE = re.compile(r"^(file:///)([A-Za-z])(:)")


def doc_key(uri: str) -> str:
    """The identity of a document URI: percent-escapes decoded (as pygls keys its documents), drive letter
    lower-cased, so ``file:///C%3A/a.py``, ``file:///c%3a/a.py`` and ``file:///c:/a.py`` are one document."""
    key = unquote(uri)
    if key.startswith("file:///") and len(key) > 9 and key[9] == ":":
        key = _DRIVE.sub(lambda m: m.group(1) + m.group(2).lower() + m.group(3), key, count=1)
    return key


def find_open(workspace: Any, uri: str) -> TextDocument | None:
    """The editor's copy of the document at ``uri`` if it is open (whatever escaping the URI uses), else None."""
    if workspace is None:
        return None
    docs = workspace.text_documents
    doc = docs.get(unquote(uri))  # pygls' own key: the common case costs one dict lookup
    if doc is not None:
        return doc
    key = doc_key(uri)
    for d in list(docs.values()):  # the same file named with another drive-letter case or escaping
        if doc_key(d.uri) == key:
            return d
    return None


def is_file_uri(uri: str) -> bool:
    """Whether the document lives on disk (``file:`` scheme)."""
    return uri[:5].lower() == "file:"


def fs_path(doc: TextDocument) -> str | None:
    """The document's file on disk (decoded), or None when it has none (``untitled:``, notebook cells, ...)."""
    return doc.path if is_file_uri(doc.uri) and doc.path else None


def name_of(doc: TextDocument) -> str:
    """What to call the document in prompts, exclusion checks and messages: its decoded path, or for a document
    that is not a file the decoded rest of its URI (``Untitled-1``, ``/nb.ipynb#cell``)."""
    path = fs_path(doc)
    if path:
        return path
    rest = unquote(doc.uri.split(":", 1)[-1])
    return rest or doc.uri
