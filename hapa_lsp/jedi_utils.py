"""jedi in one place: a single worker thread, stale work skipped, and jedi -> LSP conversion."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable

from lsprotocol import types

_KINDS = {
    "module": types.CompletionItemKind.Module,
    "class": types.CompletionItemKind.Class,
    "instance": types.CompletionItemKind.Variable,
    "function": types.CompletionItemKind.Function,
    "param": types.CompletionItemKind.Variable,
    "path": types.CompletionItemKind.File,
    "keyword": types.CompletionItemKind.Keyword,
    "property": types.CompletionItemKind.Property,
    "statement": types.CompletionItemKind.Variable,
}


class JediRunner:
    """Runs jedi calls on one dedicated thread (jedi is not thread-safe), never on the event loop.

    The stdin reader of pygls uses the default thread pool, so jedi gets its own: a slow parse must
    never delay reading the next message. A job whose ``still_wanted()`` is False when its turn comes
    is skipped rather than computed: that is how a burst of keystrokes avoids a backlog.
    """

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hapa-jedi")
        self._projects: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.skipped = 0

    def warm_up(self) -> concurrent.futures.Future:
        """Import jedi and parso's grammar in the background so the first request is not slow.

        No completion is run here: inferring builtins costs ~50 MB, paid only once completions are asked for.
        """

        def work() -> None:
            import jedi

            jedi.Script("x = 1\n").get_names()

        return self._pool.submit(work)

    def _project(self, root: str | None) -> Any:
        import jedi

        key = root or ""
        with self._lock:
            p = self._projects.get(key)
            if p is None:
                p = self._projects[key] = jedi.Project(root) if root else None
            return p

    async def run(self, fn: Callable[..., Any], *args: Any, timeout: float, still_wanted: Callable[[], bool]
                  ) -> Any:
        """Run ``fn`` in the jedi thread within ``timeout``; None when skipped as stale or timed out."""
        loop = asyncio.get_running_loop()

        def job() -> Any:
            if not still_wanted():
                self.skipped += 1
                return None
            return fn(*args)

        fut = loop.run_in_executor(self._pool, job)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None

    def complete(self, source: str, path: str, root: str | None, line: int, column: int, line_prefix: str,
                 encoding: str = "utf-16", limit: int = 200) -> list[types.CompletionItem]:
        """jedi completions at a 0-based position (code points) as LSP items, in jedi's order (jedi thread)."""
        import jedi

        from hapa_lsp.context import units_len

        end = types.Position(line, units_len(line_prefix, encoding))

        script = jedi.Script(code=source, path=path or None, project=self._project(root))
        items: list[types.CompletionItem] = []
        for i, c in enumerate(script.complete(line + 1, column)):
            if i >= limit:
                break
            typed = len(c.name) - len(c.complete or "")
            start = types.Position(line, units_len(line_prefix[:max(0, column - typed)], encoding))
            rng = types.Range(start, end)
            items.append(types.CompletionItem(
                label=c.name,
                kind=_KINDS.get(c.type, types.CompletionItemKind.Text),
                detail=c.description[:80] if c.description else None,
                sort_text=f"b{i:04d}",
                filter_text=c.name,
                text_edit=types.TextEdit(rng, c.name),
            ))
        return items

    def shutdown(self) -> None:
        """Stop the worker thread without waiting for a running parse."""
        self._pool.shutdown(wait=False, cancel_futures=True)
