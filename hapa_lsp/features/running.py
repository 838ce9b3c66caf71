"""What the generation handlers share: progress and streamed chunks, cancellation, the history row, edits sent to
the client, explanation documents, and the status while a generation runs.

``features/generate.py`` (the commands) and ``features/code_actions.py`` (resolve, apply) both run generations
through ``run_generation`` here; neither imports the other. ``generation`` and ``history`` are imported on
first use (``LazyModule``): this module is part of start, and those are not (tests/unit/test_startup.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.uris import from_fs_path

from hapa_lsp import errors
from hapa_lsp.features.common import LazyModule
from hapa_lsp.log import get_logger
from hapa_lsp.protocol import client_supports, supports_document_changes

if TYPE_CHECKING:
    from hapa_lsp.config import Agent
    from hapa_lsp.features.args import SuggestionEventArgs
    from hapa_lsp.generation import Generation, GenerationRequest
    from hapa_lsp.server import HapaServer

generation = LazyModule("hapa_lsp.generation")
history = LazyModule("hapa_lsp.history")

#: Explanation files kept next to the database: the newest this many, none older than EXPLANATION_MAX_AGE_S.
EXPLANATIONS_KEPT = 200
EXPLANATION_MAX_AGE_S = 7 * 86400
_EXPLANATION_NAME = re.compile(r"\d{8}-\d{6}-[\w-]+\.md")
STREAM_CHUNK = "hapa/streamChunk"
_THROTTLE_S = 0.03


def _log():
    return get_logger("hapa_lsp.generate")


def check_size(ls: HapaServer, text: str, field_name: str) -> None:
    """E4012 when ``text`` alone would not fit the generation prompt budget (it would be cut mid-code)."""
    c = ls.settings.context
    limit = int(c.generation_max_prompt_tokens * c.chars_per_token)
    if len(text) > limit:
        raise errors.ContextTooLarge(f"'{field_name}' has {len(text)} characters; the generation prompt takes about "
                                f"{limit} (hapa.context.generationMaxPromptTokens)", field=field_name)


class Stream:
    """One generation's work-done progress and ``hapa/streamChunk`` notifications; cancels the task on request."""

    def __init__(self, ls: HapaServer, request_id: str, title: str, *, token: Any = None, enabled: bool = True):
        self.ls = ls
        self.request_id = request_id
        self.title = title
        self.token = token
        self.enabled = enabled
        self._last = 0.0
        self._pending: str | None = None
        self._text = ""
        self._task: asyncio.Task | None = None
        self._creating: asyncio.Future | None = None
        self._closed = False  # __aexit__ ran: a progress confirmed from now on is not begun
        self.outcome = "done"

    async def __aenter__(self) -> Stream:
        self._task = asyncio.current_task()
        if not self.enabled:
            return self
        if self.token is not None:
            self._begin(self.token)
        elif client_supports(self.ls, "window.work_done_progress") and types.WINDOW_WORK_DONE_PROGRESS_CREATE not in self.ls.silent_methods:
            # (a client that left a create unanswered gets chunks only from then on, not a wait per generation)
            # Created alongside the model call, not before it: the editor's round trip must not delay the answer.
            self._creating = asyncio.ensure_future(self._create(f"hapa-{self.request_id}-{os.getpid()}"))
        return self

    async def _create(self, token: str) -> None:
        try:
            await self.ls.ask_client(types.WINDOW_WORK_DONE_PROGRESS_CREATE, types.WorkDoneProgressCreateParams(token))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a client that refuses progress still gets chunks and the result
            return
        if not self._closed:
            self._begin(token)

    def _begin(self, token: Any) -> None:
        progress = self.ls.work_done_progress
        progress.begin(token, types.WorkDoneProgressBegin(title=self.title, cancellable=True,
                                                          message="waiting for the model"))
        self.token = token
        fut = progress.tokens.get(token)
        if fut is not None:
            loop = asyncio.get_running_loop()
            fut.add_done_callback(lambda f: f.cancelled() and loop.call_soon_threadsafe(self._cancel))

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self.outcome = "cancelled"
            self._task.cancel()

    def on_text(self, text: str) -> None:
        """The text so far: forwarded at most every 30 ms (the rest is flushed at the end)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._last and now - self._last < _THROTTLE_S:
            self._pending = text
            return
        self._send(text)

    def _send(self, text: str, done: bool = False) -> None:
        self._last = time.monotonic()
        self._pending = None
        self._text = text
        self.ls.protocol.notify(STREAM_CHUNK, {"request_id": self.request_id, "text": text, "done": done})
        if self.token is not None and not done:
            lines = text.count("\n") + 1
            self.ls.work_done_progress.report(self.token, types.WorkDoneProgressReport(
                message=f"{len(text)} characters, {lines} lines", cancellable=True))

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.enabled:
            return
        self._closed = True
        if self._creating is not None and not self._creating.done():
            # The answer is ready; progress the client has not confirmed yet is not worth waiting for (begin was
            # not sent, so no end is owed). The request runs out on its own: a client that never answers it is
            # then not asked again (ask_client remembers), one that answers late gets no begin (see _create).
            self.ls.keep(self._creating)
        if exc_type is None and (self._pending is not None or self._text):
            self._send(self._pending if self._pending is not None else self._text, done=True)
        if self.token is not None:
            msg = "done" if exc_type is None else (
                "cancelled" if exc_type is asyncio.CancelledError else "failed")
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=msg))
            self.ls.work_done_progress.tokens.pop(self.token, None)


def link_request_cancel(ls: HapaServer) -> Any:
    """Make ``$/cancelRequest`` for the current command cancel this task; the client's progress token, if any."""
    return ls.protocol.follow_cancellation()


def workspace_edit(ls: HapaServer, uri: str, version: int | None, edits: list[types.TextEdit],
                   create: bool = False) -> types.WorkspaceEdit:
    """A WorkspaceEdit in the form the client understands (documentChanges when it can, plus CreateFile)."""
    if create or supports_document_changes(ls):
        changes: list[Any] = []
        if create:
            changes.append(types.CreateFile(uri=uri, options=types.CreateFileOptions(ignore_if_exists=True)))
        changes.append(types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
            edits=edits))
        return types.WorkspaceEdit(document_changes=changes)
    return types.WorkspaceEdit(changes={uri: edits})


async def apply_edit(ls: HapaServer, edit: types.WorkspaceEdit, label: str) -> bool:
    """Ask the client to apply ``edit`` (workspace/applyEdit); False when it cannot or refuses."""
    if not client_supports(ls, "workspace.apply_edit"):
        return False
    try:
        result = await ls.ask_client(types.WORKSPACE_APPLY_EDIT, types.ApplyWorkspaceEditParams(edit=edit, label=label),
                                     2 * ls.settings.resilience.client_timeout)  # the editor may ask the user
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a client error or no answer is reported as "not applied" (the code is in
        _log().warning("workspace/applyEdit failed", exc_info=True)  # the answer for the client to use)
        return False
    return bool(getattr(result, "applied", False))


def publish_issues(ls: HapaServer, uri: str, diagnostics: list[types.Diagnostic]) -> None:
    """Show generated-code issues in the editor (replacing hapa's previous ones for the document)."""
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))


async def store_call(ls: HapaServer, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a history/feedback function on the store in a worker thread; E5003 reaches the caller."""
    store = ls.store
    return await store.arun(functools.partial(fn, store, *args, **kwargs))


async def record(ls: HapaServer, req: GenerationRequest, *, uri: str, status: str, gen: Generation | None = None,
                 ms: float = 0.0, incident_id: str | None = None) -> int | None:
    """Store the generation in the history; a database failure is reported, never fatal to the answer."""
    try:
        return await store_call(
            ls, history.record_generation, profile=req.profile.to_dict(), kind=req.task,
            question=req.question or req.target[:2000], uri=uri, language=req.language,
            agent=req.agent.name if req.agent else "", model=gen.model if gen else "",
            prompt_tokens=gen.prompt_tokens if gen else 0, completion_tokens=gen.completion_tokens if gen else 0,
            latency_ms=round(ms, 1), status=status, generated_code=gen.code if gen else "",
            explanation=gen.explanation if gen else "", incident_id=incident_id)
    except errors.HapaError as exc:
        ls.background_failure(exc, method="history")
        return None


async def run_generation(ls: HapaServer, req: GenerationRequest, *, uri: str, title: str, stream: bool,
                         token: Any = None) -> tuple[Generation, float]:
    """Generate with progress and chunks; history is recorded for failures and cancellations here."""
    rid = ls.engine.next_request_id()
    t0 = time.perf_counter()
    gen: Generation | None = None
    s = Stream(ls, rid, title, token=token, enabled=stream)
    # hapa/status says "busy" while any generation runs (status bars show it), then "ok" again
    # unless a failure changed the state meanwhile.
    ls.busy_generations += 1
    ls.set_status("busy", title)
    # Shutdown and exit wait for running generations, so a cancellation still unwinding gets its history row.
    ls.keep(asyncio.current_task())
    try:
        async with s:
            gen = await generation.generate(ls.upstream, ls.settings, req, on_text=s.on_text)
            gen.request_id = rid
        if ls.status_state in ("error", "warning"):
            ls.background_success()  # the model answered: an earlier failure no longer describes the server
    except asyncio.CancelledError:
        ls.keep(asyncio.ensure_future(record(ls, req, uri=uri, status="cancelled",
                                             ms=(time.perf_counter() - t0) * 1000)))
        if s.outcome == "cancelled":
            # window/workDoneProgress/cancel: the request itself is still open and gets an answer.
            err = errors.Cancelled("cancelled from the progress indicator")
            err.request_id = rid
            err.recorded = True  # a user's choice, not an incident
            raise err from None
        raise
    except errors.HapaError as exc:
        ms = (time.perf_counter() - t0) * 1000
        ls.record_incident(exc, req.task)
        exc.recorded = True  # callers must not count it twice
        exc.request_id = rid
        if not isinstance(exc, errors.InputError):
            # The status bar keeps showing what just failed (model down, database error) instead of "ready".
            ls.set_status("warning" if exc.retryable else "error", exc.message, exc.code, exc.incident_id)
        rejected = rejected_generation(exc)
        await record(ls, req, uri=uri, status="rejected" if isinstance(exc, errors.ValidationFailed) else "error",
                     gen=rejected,
                     ms=ms, incident_id=exc.incident_id)
        raise
    finally:
        ls.busy_generations -= 1
        if ls.busy_generations == 0 and ls.status_state == "busy":
            ls.set_status("ok", "ready")
    return gen, (time.perf_counter() - t0) * 1000


def rejected_generation(exc: errors.HapaError) -> Generation | None:
    """The attempt the model made when its code was rejected (E4011), else None."""
    return exc.generation if isinstance(exc, generation.GenerationRejected) else None


def failure(exc: errors.HapaError, ms: float) -> dict[str, Any]:
    """The result of a generation command that failed (a result, not an error: the client shows what came)."""
    gen = rejected_generation(exc)
    out = {"status": "cancelled" if isinstance(exc, errors.Cancelled) else "error",
           "request_id": exc.request_id,
           "generated_code": gen.code if gen is not None else "",
           "explanation": gen.explanation if gen is not None else "", "response_time_ms": round(ms, 1),
           "incident_id": exc.incident_id, "error": exc.to_data()}
    if gen is not None and gen.report is not None:
        out["validation"] = gen.report.to_dict()
    return out


def success(gen: Generation, ms: float, req: GenerationRequest, history_id: int | None) -> dict[str, Any]:
    """The result of a generation command that worked (the mission's hapa.generateCode shape)."""
    report = gen.report
    return {
        "status": "success", "request_id": gen.request_id, "generated_code": gen.code,
        "explanation": gen.explanation,
        "response_time_ms": round(ms, 1), "model": gen.model, "language": req.language,
        "user_profile": req.profile.to_dict(), "history_id": history_id, "cached": gen.cached,
        "repaired": gen.repaired, "validation": report.to_dict() if report else None,
        "warnings": [f"{i.rule} (line {i.line + 1}): {i.message}" for i in report.issues] if report else [],
        "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens},
        "timings": {"before_upstream_ms": round(gen.before_upstream_ms, 2),
                    "first_chunk_ms": round(gen.first_chunk_ms, 2) if gen.first_chunk_ms is not None else None},
    }


async def explanation_document(ls: HapaServer, title: str, body: str) -> str:
    """Write ``body`` as a Markdown file next to the database and ask the editor to show it; returns its URI.

    Names are unique across processes (servers of several editors share the data directory); the file appears
    whole (written aside, then renamed); old explanations are pruned, and only files named like ours.
    """
    folder = os.path.join(os.path.dirname(os.path.abspath(ls.settings.storage.path)), "explanations")
    path = os.path.join(folder, f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}.md")

    def write() -> None:
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(f"# {title}\n\n{body.strip()}\n")
        os.replace(tmp, path)
        prune_explanations(folder, keep=path)

    await asyncio.get_running_loop().run_in_executor(None, write)
    uri = from_fs_path(path) or path
    if client_supports(ls, "window.show_document.support"):
        try:
            result = await ls.ask_client(types.WINDOW_SHOW_DOCUMENT, types.ShowDocumentParams(uri=uri, take_focus=True))
            if getattr(result, "success", False):
                return uri
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the editor could not open it: fall back to a message
            _log().warning("window/showDocument failed", exc_info=True)
    ls.window_show_message(types.ShowMessageParams(types.MessageType.Info, f"{title}\n\n{body.strip()}"))
    return uri


def prune_explanations(folder: str, *, keep: str = "", now: float | None = None) -> int:
    """Delete explanation files beyond the newest EXPLANATIONS_KEPT or older than EXPLANATION_MAX_AGE_S; returns
    how many. Other files in the folder are never touched."""
    now = time.time() if now is None else now
    found = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file() and _EXPLANATION_NAME.fullmatch(e.name):
                try:
                    found.append((e.stat().st_mtime, e.path))
                except OSError:
                    continue
    found.sort(reverse=True)
    removed = 0
    for i, (mtime, p) in enumerate(found):
        if p != keep and (i >= EXPLANATIONS_KEPT or now - mtime > EXPLANATION_MAX_AGE_S):
            try:
                os.remove(p)
                removed += 1
            except OSError:
                pass  # another server pruned it first
    return removed


def find_agent(ls: HapaServer, name: str) -> Agent:
    """The configured agent called ``name``; E4001 (field name) when there is none."""
    for a in ls.settings.agents.presets:
        if a.name == name:
            return a
    names = ", ".join(a.name for a in ls.settings.agents.presets) or "none configured"
    raise errors.InvalidInput(f"no agent named {name!r} (agents: {names})", field="name")


async def record_suggestion_event(ls: HapaServer, kind: str, info: SuggestionEventArgs) -> None:
    """Store one shown / accepted / partially accepted suggestion (the acceptance-rate inputs)."""
    accepted = info.accepted_length
    if kind == "partial" and accepted is None:
        raise errors.MissingField("'accepted_length' is required", field="accepted_length")
    length = info.length or 0
    if kind == "accepted":
        accepted = length
    await store_call(ls, history.record_feedback, kind, request_id=info.request_id, uri=info.uri,
                     language=info.language, model=info.model, shown_chars=length, accepted_chars=accepted or 0)
