"""jedi's facts for a document's imported names, kept on disk between sessions: reopening a project starts warm.

A cold jedi needs seconds to resolve what a file imports from installed packages; the answers rarely change. For
each document, the facts of its imported names are written to one JSON file under hapa-lsp's own cache directory
(``<jedi cache>/facts-v1/<sha256 of the path>.json``, never a directory other tools use), with what they depend on:
the jedi version, the module each name was imported from, and the (mtime, size) of every file a fact was read
from. On open they are read back (in a worker thread) and each entry is used only if all of that still holds. A
file that cannot be read or parsed is deleted and ignored; writes go to a temporary file that replaces the old one
(a crash leaves the old file or the new one, never half of one); the directory is pruned to the newest files.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import tempfile
from typing import Any

from hapa_lsp.context.uses import Fact

FORMAT = 1
MAX_FILES = 400
MAX_ENTRIES = 200  # per document


def _jedi_version() -> str:
    try:
        return importlib.metadata.version("jedi")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


class FactsStore:
    """One JSON file of facts per document path (all methods block: call them from a worker thread)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._version: str | None = None
        self.discarded = 0  # corrupt or foreign files removed

    @property
    def jedi_version(self) -> str:
        if self._version is None:
            self._version = _jedi_version()
        return self._version

    def _file(self, doc_path: str) -> str:
        return os.path.join(self.directory, hashlib.sha256(doc_path.encode("utf-8", "surrogatepass")).hexdigest()[:32]
                            + ".json")

    def load(self, doc_path: str, modules: dict[str, str]) -> dict[str, tuple[Fact, ...]]:
        """The stored facts of ``doc_path`` whose name is still imported from the same module (``modules``: bound
        name -> module) and whose source files are unchanged."""
        file = self._file(doc_path)
        try:
            with open(file, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("path") != doc_path:
                raise ValueError("not a facts file of this version")
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise ValueError("entries")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            self._discard(file)
            return {}
        if data.get("jedi") != self.jedi_version:
            return {}  # another jedi may resolve differently: rewritten by this session's first save
        out: dict[str, tuple[Fact, ...]] = {}
        stats: dict[str, list[int] | None] = {}
        try:
            for expr, entry in entries.items():
                head = expr.split(".", 1)[0]
                if modules.get(head) != entry["module"]:
                    continue
                facts = tuple(Fact(str(f[0]), int(f[1]), str(f[2]), str(f[3]), str(f[4])) for f in entry["facts"])
                ok = True
                for dep, sig in entry["deps"].items():
                    if dep not in stats:
                        stats[dep] = _stat(dep)
                    if stats[dep] != sig:
                        ok = False
                        break
                if ok:
                    out[expr] = facts
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            self._discard(file)
            return {}
        return out

    def save(self, doc_path: str, entries: dict[str, tuple[str, tuple[Fact, ...]]]) -> None:
        """Replace the stored facts of ``doc_path`` (expr -> (module imported from, facts)), atomically."""
        os.makedirs(self.directory, exist_ok=True)
        out: dict[str, Any] = {}
        stats: dict[str, list[int] | None] = {}
        for expr, (module, facts) in list(entries.items())[-MAX_ENTRIES:]:
            deps: dict[str, list[int]] = {}
            for f in facts:
                if f.path and os.path.isabs(f.path):
                    if f.path not in stats:
                        stats[f.path] = _stat(f.path)
                    if stats[f.path] is None:
                        break
                    deps[f.path] = stats[f.path]
            else:
                out[expr] = {"module": module, "deps": deps,
                             "facts": [[f.path, f.line, f.name, f.kind, f.text] for f in facts]}
        data = {"format": FORMAT, "jedi": self.jedi_version, "path": doc_path, "entries": out}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".facts-", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self._file(doc_path))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.prune()

    def prune(self, keep: int = MAX_FILES) -> None:
        """Keep the ``keep`` most recently written files (and no leftovers of interrupted writes)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        files = []
        for n in names:
            p = os.path.join(self.directory, n)
            if n.endswith(".part"):
                with contextlib.suppress(OSError):
                    if os.stat(p).st_mtime < os.stat(self.directory).st_mtime - 3600:
                        os.unlink(p)  # an interrupted write of an earlier session
                continue
            if n.endswith(".json"):
                with contextlib.suppress(OSError):
                    files.append((os.stat(p).st_mtime, p))
        files.sort(reverse=True)
        for _, p in files[keep:]:
            with contextlib.suppress(OSError):
                os.unlink(p)

    def _discard(self, file: str) -> None:
        self.discarded += 1
        with contextlib.suppress(OSError):
            os.unlink(file)
