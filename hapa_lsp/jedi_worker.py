"""The jedi worker process: every jedi call of the server runs here, never in the server's own process.

Why a process and not a thread: jedi holds the GIL for most of its work, so a jedi thread slows the event
loop that answers keystrokes; and jedi's inference caches (parse trees of every module it touched) stay in
the heap for good, freed memory included (fragmentation). Here jedi gets its own core, and the server can
replace the worker when it has grown too large (``hapa_lsp.jedi_client.JediRunner``).

Protocol on the worker's stdin/stdout pipes (private to the server; the editor's stdio is never touched):
frames of a 4-byte big-endian length and a pickle. Request ``(op, args)``; reply
``(ok, result_or_error_text, rss_mb)``. One request at a time. EOF on stdin ends the worker. ``--prewarm``: complete
on an empty file before reading requests (the worker started with the server process); ``--helper``: run at a lower
CPU priority (``JediRunner.run_aside``).

jedi's parse cache: jedi and parso keep pickled parse trees in a cache directory that every jedi-based tool of
the user shares (``~/.cache/jedi``), written in place: a process killed mid-write leaves a truncated file that
then breaks jedi for every tool, until deleted by hand. The worker is killed on purpose (hung, too big), so it
never writes there: it uses a directory of hapa-lsp's own under the user cache dir, writes each entry atomically
(temporary file + rename), and treats an entry that cannot be read as missing (it is removed and re-parsed).
"""

from __future__ import annotations

import gc
import importlib.machinery
import os
import pickle
import select
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import jedi
import parso
import parso.cache as pc

# At import, before main() drops the working directory from sys.path.
from hapa_lsp.cache_dirs import jedi_cache_directory
from hapa_lsp.context.jedi_facts import resolve_batch

_HEAD = struct.Struct(">I")
HELPER_NICE = 10
#: jedi's parsing and inference allocate millions of small objects linked both ways (a parse tree's nodes point to
#: their parents). CPython's cyclic collector, left to its default thresholds, walks the growing heap again and
#: again while they are made: a third of the CPU time of a first completion on an empty parse cache (builtins,
#: typing, then ``os.path.``: 1.3 -> 0.85 s here) and about half of it on a filled cache. The worker process
#: collects on its own schedule instead (``serve(manage_gc=True)``): between jobs, when no request is waiting.
#: Within a job CPython still collects its young objects after this many allocations (a safety net for a long job).
GC_THRESHOLD = 500_000
#: An idle collection runs once this many objects were allocated (net) since the last one.
GC_IDLE_AFTER = 20_000
#: Errors a damaged pickle raises on load (truncated, garbage, written by another parso version).
_CORRUPT = (EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError, TypeError, ValueError,
            MemoryError)


cache_directory = jedi_cache_directory  # the name the worker and its tests use


def use_own_cache(directory: str | None = None) -> str:
    """Point jedi at hapa-lsp's cache directory and make parso's cache writes atomic and its loads self-healing.

    parso has no public hook for either; these are the two functions its cache goes through
    (``tests/unit/test_jedi_worker.py`` guards that they exist and are used).
    """
    directory = directory or cache_directory()
    jedi.settings.cache_directory = directory
    _sweep_parts(directory)
    if getattr(pc._save_to_file_system, "_hapa", False):
        return directory
    original_load = pc._load_from_file_system

    def save(hashed_grammar: str, path: Any, item: Any, cache_path: Any = None) -> None:
        target = pc._get_hashed_path(hashed_grammar, path, cache_path=cache_path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=_TMP_PREFIX, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(item, fh, pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)  # readers see the old entry or the whole new one, never a part
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def load(hashed_grammar: str, path: Any, p_time: Any, cache_path: Any = None) -> Any:
        try:
            return original_load(hashed_grammar, path, p_time, cache_path=cache_path)
        except _CORRUPT as exc:
            # A damaged entry is a cache miss: the module is parsed again and the entry rewritten.
            target = pc._get_hashed_path(hashed_grammar, path, cache_path=cache_path)
            try:
                os.unlink(target)
            except OSError:
                pass
            print(f"hapa jedi worker: removed a damaged parse cache entry {target} ({type(exc).__name__})",
                  file=sys.stderr)
            return None

    save._hapa = True  # type: ignore[attr-defined]
    pc._save_to_file_system = save
    pc._load_from_file_system = load
    return directory


_TMP_PREFIX = ".hapa-"
#: A write in progress older than this was cut off (its worker was killed) and is removed.
_STALE_PART_S = 600.0


def _sweep_parts(directory: str) -> None:
    """Remove half-written entries that killed workers left behind (they are never read: not ``.pkl``)."""
    now = time.time()
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.startswith(_TMP_PREFIX) and name.endswith(".part"):
                p = os.path.join(root, name)
                try:
                    if now - os.stat(p).st_mtime > _STALE_PART_S:
                        os.unlink(p)
                except OSError:
                    pass


def rss_mb() -> float:
    """This process's resident memory in MB (0.0 where the platform does not say)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource  # local: POSIX only (the ImportError below is the fallback)

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak: kB on Linux, bytes on macOS
        return peak / (1048576 if sys.platform == "darwin" else 1024)
    except (ImportError, OSError):
        return 0.0


#: What the worker started with the server process parses first (``serve(prewarm=True)``: jedi's first completion
#: anywhere), in jedi's order; a helper's ``Jedi.parse_ahead`` takes them from the end.
PREWARMED = ("builtins", "sys", "typing", "_typeshed", "typing_extensions")


def _module_files(module: str) -> list[tuple[str, bool]]:
    """(path, is stub) of the files jedi reads for an absolute module name: its typeshed stub, then its source
    found on sys.path (never imported; frozen and compiled modules have none)."""
    out: list[tuple[str, bool]] = []
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        return out
    stdlib = os.path.join(os.path.dirname(jedi.__file__), "third_party", "typeshed", "stdlib")
    for cand in (os.path.join(stdlib, *parts) + ".pyi", os.path.join(stdlib, *parts, "__init__.pyi")):
        if os.path.isfile(cand):
            out.append((cand, True))
            break
    try:
        spec = None
        search: Any = None
        for i in range(len(parts)):
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]), search)
            if spec is None:
                break
            search = spec.submodule_search_locations
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            out.append((spec.origin, False))
    except (ImportError, ValueError, OSError):
        pass
    return out


def _stub_imports(tree: Any, module: str, file: str) -> list[str]:
    """The modules jedi needs to list a stub's names: its star imports (``os.path``: ``from posixpath import *``)
    and its own package's modules it imports (``os``: ``from . import path``), relative names resolved against
    ``module``. Other imports are followed only for the names a completion infers: not ahead."""
    package = module.split(".") if file.endswith("__init__.pyi") else module.split(".")[:-1]
    out: list[str] = []
    for imp in tree.iter_imports():
        try:
            if imp.type != "import_from" or not (imp.level or imp.is_star_import()):
                continue
            anchor = package[:len(package) - (imp.level - 1)] if imp.level else []
            if imp.level and (not package or len(anchor) != len(package) - (imp.level - 1)):
                continue  # beyond the top-level package
            from_names = [n.value for n in imp.get_from_names()]
            base = [*anchor, *from_names]
            if base:
                out.append(".".join(base))
            if imp.level and not from_names and not imp.is_star_import():  # from . import path
                out.extend(".".join([*base, n.value]) for n in (p[-1] for p in imp.get_paths()))
        except (AttributeError, ValueError):
            continue
    return list(dict.fromkeys(n for n in out if n))


class Jedi:
    """The worker's jedi state: projects per workspace root and the environment to infer in."""

    def __init__(self) -> None:
        self._projects: dict[str, Any] = {}
        self._env: Any = None

    def environment(self) -> Any:
        """jedi's default environment; when that is this very interpreter, infer in-process.

        jedi's default runs a helper process of its own for compiled modules; in a disposable worker that is a
        third Python process (~30 MB) for nothing. A virtualenv named by VIRTUAL_ENV/CONDA_PREFIX keeps it.
        """
        if self._env is None:
            env = jedi.get_default_environment()
            if os.path.normcase(os.path.abspath(getattr(env, "path", ""))) == os.path.normcase(
                    os.path.abspath(sys.prefix)):
                env = jedi.InterpreterEnvironment()
            self._env = env
        return self._env

    def project(self, root: str | None) -> Any:
        if not root:
            return None
        p = self._projects.get(root)
        if p is None:
            p = self._projects[root] = jedi.Project(root)
        return p

    def warm(self) -> None:
        """Load parso's grammar, so that the first real request is not slow."""
        jedi.Script("x = 1\n", environment=self.environment()).get_names()

    def complete(self, source: str, path: str, root: str | None, line: int, column: int, limit: int
                 ) -> list[tuple[str, str, str, int]]:
        """jedi completions at a 0-based line and code-point column: (name, type, description, chars typed)."""
        script = jedi.Script(code=source, path=path or None, project=self.project(root),
                             environment=self.environment())
        out = []
        for i, c in enumerate(script.complete(line + 1, column)):
            if i >= limit:
                break
            out.append((c.name, c.type, (c.description or "")[:80], len(c.name) - len(c.complete or "")))
        return out

    def parse_ahead(self, modules: list[str], budget_s: float) -> int:
        """Parse the files jedi will read for ``modules`` (their typeshed stubs and sources, and what the stubs
        import), then the files of ``PREWARMED`` from the last, into the shared parse cache: nothing is inferred.
        For a helper worker (``JediRunner.run_aside``) while the first worker parses builtins and typing: that
        worker then loads these from the cache. Files already cached are skipped; stops after ``budget_s``.
        Returns how many files it parsed."""
        deadline = time.monotonic() + budget_s
        cache_path = jedi.settings.cache_directory
        # jedi parses stubs with its latest grammar and sources with the environment's (jedi.inference).
        stub_grammar, source_grammar = parso.load_grammar(version="3.13"), parso.load_grammar()
        todo = [(m, 0) for m in modules] + [(m, 1) for m in reversed(PREWARMED)]
        seen: set[str] = set()
        parsed = 0
        while todo and time.monotonic() < deadline:
            module, depth = todo.pop(0)
            if module in seen or (depth == 0 and module.split(".")[0] in PREWARMED):
                continue
            seen.add(module)
            for file, stub in _module_files(module):
                grammar = stub_grammar if stub else source_grammar
                target = pc._get_hashed_path(grammar._hashed, file, cache_path=Path(cache_path))
                if os.path.exists(target) or time.monotonic() >= deadline:
                    continue
                try:
                    tree = grammar.parse(path=file, cache=True, diff_cache=jedi.settings.fast_parser,
                                         cache_path=cache_path)
                except (OSError, UnicodeDecodeError, RecursionError):
                    continue
                parsed += 1
                if stub and depth < 2 and module.split(".")[0] not in PREWARMED:
                    # what the stub imports, before the next module (``os`` -> ``os.path`` -> ``posixpath``)
                    todo[:0] = [(m, depth + 1) for m in _stub_imports(tree, module, file)
                                if m not in seen and m.split(".")[0] not in PREWARMED]
        return parsed

    def facts(self, text: str, path: str, root: str | None, todo: list, far: list, exclude_globs: tuple,
              cap_s: float) -> dict[str, Any]:
        """Resolve uses to facts (``hapa_lsp.context.jedi_facts.resolve_batch``)."""
        return resolve_batch(text, path, root, todo, far, exclude_globs, cap_s, project=self.project(root),
                             environment=self.environment())


def _pending(inp: Any) -> bool:
    """Whether a request is already waiting on ``inp`` (False where that cannot be told: not a pipe, Windows)."""
    try:
        ready, _w, _x = select.select([inp.fileno()], [], [], 0)
    except (AttributeError, OSError, ValueError):
        return False
    return bool(ready)


def _collect_if_idle(inp: Any) -> bool:
    """The collection the worker postponed (``GC_THRESHOLD``), run now if it is due and no request waits: the
    server sends the next job only after this reply, so a collection here rarely delays one. Generational, as
    CPython's own: the young objects each time, the older ones after every ``threshold1`` / ``threshold2``
    collections of the younger (a full collection walks every parse tree of the user's files: collecting all
    of them after each job cost a quarter of the completion lists that had jedi's items while typing).
    True if it ran."""
    count0, count1, count2 = gc.get_count()
    if count0 < GC_IDLE_AFTER or _pending(inp):
        return False
    _t0, t1, t2 = gc.get_threshold()
    gc.collect(2 if count1 >= t1 and count2 >= t2 else 1 if count1 >= t1 else 0)
    return True


def serve(inp: Any, out: Any, *, prewarm: bool = False, manage_gc: bool = False) -> None:
    """Answer requests until EOF. ``prewarm``: first complete on an empty file, which parses what every completion
    needs (builtins, typing and what they import: ~1.7 s with an empty parse cache), while the server itself is still
    starting; requests sent meanwhile wait in the pipe. ``manage_gc``: this process's cyclic collector runs between
    jobs (``GC_THRESHOLD``); what the prewarm loaded stays for the worker's life and is never walked again."""
    state = Jedi()
    ops: dict[str, Callable[..., Any]] = {"warm": state.warm, "complete": state.complete, "facts": state.facts,
                                          "parse_ahead": state.parse_ahead}
    if prewarm:
        try:
            state.complete("", "", None, 0, 0, 1)
        except Exception:  # noqa: BLE001 - the first real job reports whatever is wrong with jedi
            traceback.print_exc(limit=4, file=sys.stderr)
    if manage_gc:
        gc.freeze()  # builtins' and typing's trees: jedi keeps them as long as the process lives
    while True:
        head = inp.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        body = inp.read(_HEAD.unpack(head)[0])
        try:
            op, args = pickle.loads(body)
            reply: tuple[Any, ...] = (True, ops[op](*args))
        except Exception as exc:  # noqa: BLE001 - the server logs it; the worker keeps serving
            reply = (False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        try:
            data = pickle.dumps((*reply, rss_mb()), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            data = pickle.dumps((False, f"unpicklable result: {exc}", rss_mb()))
        out.write(_HEAD.pack(len(data)) + data)
        out.flush()
        if manage_gc:
            _collect_if_idle(inp)


def main() -> None:
    """Entry point: ``python -m hapa_lsp.jedi_worker`` (started by the server, not by people)."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    # The pipe to the server carries frames only: anything printed (by jedi, a plugin, a warning) goes to stderr.
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull)  # noqa: SIM115 - nothing here may read the request pipe but serve()
    gc.set_threshold(GC_THRESHOLD)  # collections move between jobs: serve(manage_gc=True)
    use_own_cache()
    if "--helper" in sys.argv[1:] and hasattr(os, "nice"):
        # A helper (``JediRunner.run_aside``) only gets ahead of work: the server's own process, answering
        # keystrokes, wins every core it competes for.
        try:
            os.nice(HELPER_NICE)
        except OSError:
            pass

    # The entry that ``-m`` put first (the server's working directory) is not part of the user's sys.path.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.abspath(os.getcwd()):
        del sys.path[0]
    try:
        serve(inp, out, prewarm="--prewarm" in sys.argv[1:], manage_gc=True)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
