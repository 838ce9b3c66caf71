"""Open documents: their identity, decided in one place.

Editors send URIs percent-escaped (``file:///tmp/my%20project/a.py``; VS Code on Windows always
``file:///c%3A/Users/...``), and pygls keys its open documents by the unquoted form. ``doc_key`` is that form,
with a Windows drive letter lower-cased; ``find_open`` is the only lookup of an open document; ``fs_path`` is
the file a document is on disk, or None for ``untitled:``, notebook cells and other non-``file`` schemes, which
get AI completion from the editor's text but nothing read from disk. Nothing else compares raw URI strings.

The document class whose edits cost a splice instead of a rebuild is ``protocol.FastTextDocument`` (it
overrides pygls internals, so it lives in the adapter).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from pygls.workspace import TextDocument


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
