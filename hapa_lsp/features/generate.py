"""Generation commands: hapa.generateCode, agents, explain, validateCode, history and feedback; streaming plumbing."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from hapa_lsp import errors
from hapa_lsp.documents import name_of
# Imported at run time: pygls resolves command handlers' annotations with typing.get_type_hints.
from hapa_lsp.server import HapaServer  # noqa: TC001
from hapa_lsp.features.commands import first_object
from hapa_lsp.log import get_logger
from hapa_lsp.protocol import client_supports, rpc_error, supports_document_changes

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.config import Agent
    from hapa_lsp.generation import Generation, Request
    from hapa_lsp.validation import Issue, Report

STREAM_CHUNK = "hapa/streamChunk"
GENERATE = "hapa.generateCode"
AGENT_RUN = "hapa.agent.run"
AGENT_LIST = "hapa.agent.list"
EXPLAIN = "hapa.explain"
VALIDATE = "hapa.validateCode"
HISTORY_LIST = "hapa.history.list"
HISTORY_CLEAR = "hapa.history.clear"
FEEDBACK = "hapa.feedback"
FEEDBACK_STATS = "hapa.feedback.stats"
SHOW_ISSUES = "hapa.showIssues"
DID_SHOW = "hapa.didShowCompletion"
DID_PARTIAL = "hapa.didPartiallyAcceptCompletion"
_THROTTLE_S = 0.03


def _log():
    return get_logger("hapa_lsp.generate")


# ---- argument checking ----------------------------------------------------------------------------------------------
def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def normalise(obj: Mapping[str, Any], allowed: tuple[str, ...], command: str) -> dict[str, Any]:
    """The argument object with camelCase keys accepted as snake_case; E4001 names an unknown field."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in allowed else _snake(key)
        if name not in allowed:
            raise errors.InvalidInput(f"{command}: '{key}' is not a known field (expected {', '.join(allowed)})", field=key)
        out[name] = value
    return out


def want_str(args: Mapping[str, Any], name: str, *, required: bool = False, default: str = "",
             blank_ok: bool = True) -> str:
    """A string field; E4002 when required and missing (or blank), E4001 when not a string."""
    if name not in args or args[name] is None:
        if required:
            raise errors.MissingField(f"the field '{name}' is required", field=name)
        return default
    v = args[name]
    if not isinstance(v, str):
        raise errors.InvalidInput(f"'{name}' must be a string, got {type(v).__name__}", field=name)
    if required and not blank_ok and not v.strip():
        raise errors.MissingField(f"the field '{name}' must not be empty", field=name)
    return v


def want_number(args: Mapping[str, Any], name: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    """An optional number within [lo, hi]; E4001 names the field otherwise."""
    v = args.get(name)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        kind = "a whole number" if integer else "a number"
        raise errors.InvalidInput(f"'{name}' must be {kind} from {lo:g} to {hi:g}, got {v!r}",
                                field=name)
    return v


def want_bool(args: Mapping[str, Any], name: str, default: bool) -> bool:
    """An optional boolean; E4001 names the field otherwise."""
    v = args.get(name, default)
    if not isinstance(v, bool):
        raise errors.InvalidInput(f"'{name}' must be true or false, got {v!r}", field=name)
    return v


def want_position(v: Any, name: str) -> types.Position:
    """An LSP position object {line, character}."""
    if not isinstance(v, Mapping):
        raise errors.InvalidInput(f"'{name}' must be an object {{line, character}}", field=name)
    for k in ("line", "character"):
        x = v.get(k)
        if x is None:
            raise errors.MissingField(f"'{name}.{k}' is required", field=f"{name}.{k}")
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise errors.InvalidInput(f"'{name}.{k}' must be a whole number >= 0", field=f"{name}.{k}")
    return types.Position(v["line"], v["character"])


def want_range(v: Any, name: str) -> types.Range:
    """An LSP range object {start, end}."""
    if not isinstance(v, Mapping):
        raise errors.InvalidInput(f"'{name}' must be an object {{start, end}}", field=name)
    return types.Range(want_position(v.get("start"), f"{name}.start"), want_position(v.get("end"), f"{name}.end"))


def _parse_time(args: Mapping[str, Any], name: str) -> float | None:
    v = args.get(name)
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            d = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if d.tzinfo is None:
                d = d.replace(tzinfo=_dt.timezone.utc)
            return d.timestamp()
    raise errors.InvalidInput(f"'{name}' must be an ISO date (2026-01-31 or 2026-01-31T12:00:00Z) or epoch seconds", field=name)


def check_size(ls: HapaServer, text: str, field_name: str) -> None:
    """E4012 when ``text`` alone would not fit the generation prompt budget (it would be cut mid-code)."""
    c = ls.settings.context
    budget_tokens = getattr(c, "generation_max_prompt_tokens", 8192)
    limit = int(budget_tokens * c.chars_per_token)
    if len(text) > limit:
        raise errors.ContextTooLarge(f"'{field_name}' has {len(text)} characters; the generation prompt takes about "
                                f"{limit} (hapa.context.generationMaxPromptTokens)", field=field_name)


# ---- streaming, progress and cancellation -------------------------------------------------------------------------
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


# ---- documents and edits --------------------------------------------------------------------------------------------
def doc_lines(doc: TextDocument) -> list[str]:
    """The document's lines without line endings (an empty last line when it ends with a newline)."""
    return doc.source.split("\n")


def indent_of(line: str) -> str:
    """The leading whitespace of ``line``."""
    return line[: len(line) - len(line.lstrip())]


def block_indent(lines: list[str], row: int) -> str:
    """Indentation for code at a blank line: that of the previous code line, one level deeper after a colon."""
    for i in range(min(row, len(lines)) - 1, -1, -1):
        s = lines[i].rstrip()
        if s.strip():
            base = indent_of(lines[i])
            return base + "    " if s.endswith(":") else base
    return ""


def insertion_at(lines: list[str], row: int, code: str) -> types.TextEdit:
    """Put ``code`` on the blank line ``row`` (replacing it) or on new lines below a non-blank one."""
    from hapa_lsp.generation import reindent

    row = max(0, min(row, len(lines) - 1))
    line = lines[row]
    if not line.strip():
        indent = indent_of(line) or block_indent(lines, row)
        rng = types.Range(types.Position(row, 0), types.Position(row, len(line)))
        return types.TextEdit(rng, reindent(code, indent))
    indent = indent_of(line) + ("    " if line.rstrip().endswith(":") else "")
    if row + 1 < len(lines):
        at = types.Position(row + 1, 0)
        return types.TextEdit(types.Range(at, at), reindent(code, indent) + "\n")
    at = types.Position(row, len(line))
    return types.TextEdit(types.Range(at, at), "\n" + reindent(code, indent))


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


def issue_diagnostics(issues: list[Issue], start_line: int, indent: int) -> list[types.Diagnostic]:
    """Validation issues of code inserted at ``start_line`` (re-indented by ``indent`` columns) as diagnostics."""
    out = []
    for i in issues:
        sev = types.DiagnosticSeverity.Error if i.severity == "error" else types.DiagnosticSeverity.Warning
        out.append(types.Diagnostic(
            range=types.Range(types.Position(start_line + i.line, i.column + indent),
                              types.Position(start_line + i.end_line, i.end_column + indent)),
            message=i.message, severity=sev, source="hapa", code=i.rule))
    return out


def publish_issues(ls: HapaServer, uri: str, diagnostics: list[types.Diagnostic]) -> None:
    """Show generated-code issues in the editor (replacing hapa's previous ones for the document)."""
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))


def edit_diagnostics(edit: types.TextEdit, report: Report | None) -> list[types.Diagnostic]:
    """Diagnostics for the issues of code inserted by ``edit``, positioned where it lands."""
    if report is None or not report.issues:
        return []
    text = edit.new_text
    lead_nl = 1 if text.startswith("\n") else 0
    first = text.lstrip("\n").split("\n", 1)[0]
    start = edit.range.start.line + lead_nl
    return issue_diagnostics(report.issues, start, len(indent_of(first)))


# ---- history --------------------------------------------------------------------------------------------------------
async def store_call(ls: HapaServer, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a history/feedback function on the store in a worker thread; E5003 reaches the caller."""
    import functools

    store = ls.store
    return await store.arun(functools.partial(fn, store, *args, **kwargs))


async def record(ls: HapaServer, req: Request, *, uri: str, status: str, gen: Generation | None = None,
                 ms: float = 0.0, incident_id: str | None = None) -> int | None:
    """Store the generation in the history; a database failure is reported, never fatal to the answer."""
    from hapa_lsp import history

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


# ---- running a generation -------------------------------------------------------------------------------------------
async def run_generation(ls: HapaServer, req: Request, *, uri: str, title: str, stream: bool,
                         token: Any = None) -> tuple[Generation, float]:
    """Generate with progress and chunks; history is recorded for failures and cancellations here."""
    from hapa_lsp import generation

    rid = ls.engine.next_request_id()
    t0 = time.perf_counter()
    gen: Generation | None = None
    s = Stream(ls, rid, title, token=token, enabled=stream)
    # hapa/status says "busy" while any generation runs (status bars show it), then "ok" again
    # unless a failure changed the state meanwhile.
    ls.busy_generations = getattr(ls, "busy_generations", 0) + 1
    ls.set_status("busy", title)
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
            err.request_id = rid  # type: ignore[attr-defined]
            err.recorded = True  # type: ignore[attr-defined]  # a user's choice, not an incident
            raise err from None
        raise
    except errors.HapaError as exc:
        ms = (time.perf_counter() - t0) * 1000
        ls.record_incident(exc, req.task)
        exc.recorded = True  # type: ignore[attr-defined]  # callers must not count it twice
        exc.request_id = rid  # type: ignore[attr-defined]
        if exc.code.startswith("E5"):
            # The status bar keeps showing what just failed (model down, database error) instead of "ready".
            ls.set_status("warning" if exc.retryable else "error", exc.message, exc.code, exc.incident_id)
        rejected = getattr(exc, "generation", None)
        await record(ls, req, uri=uri, status="rejected" if exc.code == "E4011" else "error", gen=rejected,
                     ms=ms, incident_id=exc.incident_id)
        raise
    finally:
        ls.busy_generations -= 1
        if ls.busy_generations == 0 and ls.status_state == "busy":
            ls.set_status("ok", "ready")
    return gen, (time.perf_counter() - t0) * 1000


def _failure(exc: errors.HapaError, ms: float) -> dict[str, Any]:
    gen = getattr(exc, "generation", None)
    out = {"status": "cancelled" if exc.code == "E4008" else "error",
           "request_id": getattr(exc, "request_id", None),
           "generated_code": gen.code if gen is not None else "",
           "explanation": gen.explanation if gen is not None else "", "response_time_ms": round(ms, 1),
           "incident_id": exc.incident_id, "error": exc.to_data()}
    if gen is not None and gen.report is not None:
        out["validation"] = gen.report.to_dict()
    return out


def _success(gen: Generation, ms: float, req: Request, history_id: int | None) -> dict[str, Any]:
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


#: Explanation files kept next to the database: the newest this many, none older than EXPLANATION_MAX_AGE_S.
EXPLANATIONS_KEPT = 200
EXPLANATION_MAX_AGE_S = 7 * 86400
_EXPLANATION_NAME = re.compile(r"\d{8}-\d{6}-[\w-]+\.md")


async def explanation_document(ls: HapaServer, title: str, body: str) -> str:
    """Write ``body`` as a Markdown file next to the database and ask the editor to show it; returns its URI.

    Names are unique across processes (servers of several editors share the data directory); the file appears
    whole (written aside, then renamed); old explanations are pruned, and only files named like ours.
    """
    from pygls.uris import from_fs_path

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


def module_name(path: str, root: str | None) -> str:
    """Dotted module name of a Python file relative to the workspace root (``src/`` layouts understood)."""
    rel = os.path.relpath(path, root) if root and path.startswith(root) else os.path.basename(path)
    rel = rel[:-3] if rel.endswith(".py") else rel
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


# ---- commands -------------------------------------------------------------------------------------------------------
_GEN_FIELDS = ("user_question", "code_context", "language", "user_profile", "temperature", "stream", "uri",
               "position")
_AGENT_FIELDS = ("name", "question", "code", "language", "uri", "range", "user_profile", "temperature", "stream")


def _guard(ls: HapaServer, command: str, exc: errors.HapaError):
    if exc.code != "E4006" and not getattr(exc, "recorded", False):
        ls.record_incident(exc, command)
    return rpc_error(exc)


def register(server: HapaServer) -> None:
    """Register the generation, agent, validation, history and feedback commands."""
    from hapa_lsp.features.common import LazyModule, document_for_model, language_of, position_encoding

    generation = LazyModule("hapa_lsp.generation")
    history = LazyModule("hapa_lsp.history")

    @server.command(GENERATE)
    async def generate_code(ls: HapaServer, *args: Any) -> dict[str, Any]:
        token = link_request_cancel(ls)
        try:
            a = normalise(first_object(args, GENERATE), _GEN_FIELDS, GENERATE)
            question = want_str(a, "user_question", required=True, blank_ok=False)
            language = want_str(a, "language", default="python") or "python"
            temperature = want_number(a, "temperature", 0.0, 2.0)
            stream = want_bool(a, "stream", True)
            profile = generation.Profile.from_settings(ls.settings.profile).merged(a.get("user_profile"))
            code_context = want_str(a, "code_context")
            check_size(ls, question, "user_question")
            check_size(ls, code_context, "code_context")
            uri = want_str(a, "uri")
            pos = None
            doc = None
            if uri:
                if "position" not in a:
                    raise errors.MissingField("'position' is required with 'uri'", field="position")
                pos = want_position(a["position"], "position")
                doc = document_for_model(ls, uri)
                language = a.get("language") or language_of(doc)
                if not code_context:
                    from hapa_lsp.context import budget_window, split_at

                    s = ls.settings.context
                    cur = split_at(doc.source, pos.line, pos.character, position_encoding(ls))
                    budget = getattr(s, "generation_max_prompt_tokens", s.max_prompt_tokens) // 2
                    win = budget_window(cur, max_tokens=budget, prefix_ratio=s.prefix_ratio,
                                        chars_per_token=s.chars_per_token)
                    code_context = win.prefix + win.suffix
            elif "position" in a:
                raise errors.MissingField("'uri' is required with 'position'", field="uri")
        except errors.HapaError as exc:
            raise _guard(ls, GENERATE, exc) from exc
        req = generation.Request("generate", question=question, code_context=code_context, language=language,
                                 path=name_of(doc) if doc else "", profile=profile, temperature=temperature)
        t0 = time.perf_counter()
        try:
            gen, ms = await run_generation(ls, req, uri=uri, title="hapa: generating code", stream=stream,
                                           token=token)
        except errors.HapaError as exc:
            return _failure(exc, (time.perf_counter() - t0) * 1000)
        hid = await record(ls, req, uri=uri, status="success", gen=gen, ms=ms)
        out = _success(gen, ms, req, hid)
        if doc is not None and pos is not None:
            lines = doc_lines(doc)
            edit = insertion_at(lines, pos.line, gen.code)
            applied = await apply_edit(ls, workspace_edit(ls, uri, doc.version, [edit]), "hapa: generate code")
            out["applied"] = applied
            if applied:
                diags = edit_diagnostics(edit, gen.report)
                if diags:
                    publish_issues(ls, uri, diags)
        return out

    @server.command(AGENT_LIST)
    def agent_list(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return {"agents": [{"name": a.name, "description": a.description, "model": a.model or None,
                            "temperature": a.temperature, "applies_to": list(a.applies_to)}
                           for a in ls.settings.agents.presets]}

    @server.command(AGENT_RUN)
    async def agent_run(ls: HapaServer, *args: Any) -> dict[str, Any]:
        token = link_request_cancel(ls)
        try:
            a = normalise(first_object(args, AGENT_RUN), _AGENT_FIELDS, AGENT_RUN)
            agent = find_agent(ls, want_str(a, "name", required=True, blank_ok=False))
            question = want_str(a, "question")
            code = want_str(a, "code")
            temperature = want_number(a, "temperature", 0.0, 2.0)
            stream = want_bool(a, "stream", True)
            profile = generation.Profile.from_settings(ls.settings.profile).merged(a.get("user_profile"))
            uri = want_str(a, "uri")
            language = want_str(a, "language", default="python") or "python"
            doc = None
            rng = None
            if uri:
                doc = document_for_model(ls, uri)
                language = a.get("language") or language_of(doc)
                if "range" in a:
                    rng = full_lines(doc_lines(doc), want_range(a["range"], "range"))
                    code = code or text_of(doc_lines(doc), rng)
                else:
                    code = code or doc.source
            if not (question.strip() or code.strip()):
                raise errors.MissingField("give 'question', 'code' or a document 'uri' for the agent to work on", field="code")
            check_size(ls, code, "range" if rng is not None else ("uri" if doc is not None else "code"))
        except errors.HapaError as exc:
            raise _guard(ls, AGENT_RUN, exc) from exc
        prose = rng is None and (doc is not None or "selection" not in agent.applies_to)
        return await run_agent(ls, agent, question=question, code=code, language=language, uri=uri, doc=doc,
                               rng=rng, profile=profile, temperature=temperature, stream=stream, token=token,
                               prose=prose)

    @server.command(EXPLAIN)
    async def explain(ls: HapaServer, *args: Any) -> dict[str, Any]:
        token = link_request_cancel(ls)
        try:
            a = normalise(first_object(args, EXPLAIN), ("uri", "range", "user_profile", "stream"), EXPLAIN)
            uri = want_str(a, "uri", required=True, blank_ok=False)
            doc = document_for_model(ls, uri)
            if "range" not in a:
                raise errors.MissingField("'range' is required", field="range")
            lines = doc_lines(doc)
            rng = full_lines(lines, want_range(a["range"], "range"))
            check_size(ls, text_of(lines, rng), "range")
            profile = generation.Profile.from_settings(ls.settings.profile).merged(a.get("user_profile"))
            stream = want_bool(a, "stream", True)
        except errors.HapaError as exc:
            raise _guard(ls, EXPLAIN, exc) from exc
        req = generation.Request("explain", target=text_of(lines, rng), language=language_of(doc), path=name_of(doc),
                                 profile=profile)
        t0 = time.perf_counter()
        try:
            gen, ms = await run_generation(ls, req, uri=uri, title="hapa: explaining", stream=stream, token=token)
        except errors.HapaError as exc:
            return _failure(exc, (time.perf_counter() - t0) * 1000)
        gen.explanation, gen.code = gen.raw.strip(), ""
        hid = await record(ls, req, uri=uri, status="success", gen=gen, ms=ms)
        shown = await explanation_document(ls, f"Explanation of {os.path.basename(name_of(doc))} lines "
                                           f"{rng.start.line + 1}-{rng.end.line + 1}", gen.explanation)
        return {"status": "success", "explanation": gen.explanation, "document_uri": shown, "history_id": hid,
                "response_time_ms": round(ms, 1), "model": gen.model}

    @server.command(VALIDATE)
    def validate_code(ls: HapaServer, *args: Any) -> dict[str, Any]:
        from hapa_lsp.validation import validate

        try:
            a = normalise(first_object(args, VALIDATE), ("code", "language"), VALIDATE)
            code = want_str(a, "code", required=True)
            language = want_str(a, "language", default="python") or "python"
        except errors.HapaError as exc:
            raise _guard(ls, VALIDATE, exc) from exc
        report = validate(code, language)
        out = report.to_dict()
        if not report.parses and report.syntax_error is not None:
            err = errors.ValidationFailed(report.syntax_error.describe(), field="code")
            out["error"] = err.to_data()
        return out

    @server.command(SHOW_ISSUES)
    def show_issues(ls: HapaServer, *args: Any) -> None:
        # Run by the client after it applied a code action's edit: the issues go on the inserted range.
        try:
            a = first_object(args, SHOW_ISSUES)
            uri = want_str(a, "uri", required=True)
            raw = a.get("diagnostics")
            if not isinstance(raw, list):
                raise errors.InvalidInput("'diagnostics' must be a list", field="diagnostics")
            diags = [ls.protocol.from_json(d, types.Diagnostic) for d in raw]
        except errors.HapaError as exc:
            raise _guard(ls, SHOW_ISSUES, exc) from exc
        except Exception as exc:  # noqa: BLE001 - malformed diagnostics from a client
            raise _guard(ls, SHOW_ISSUES, errors.InvalidInput("malformed diagnostics",
                                                            field="diagnostics")) from exc
        publish_issues(ls, uri, diags)

    @server.command(HISTORY_LIST)
    async def history_list(ls: HapaServer, *args: Any) -> dict[str, Any]:
        try:
            a = normalise(first_object(args, HISTORY_LIST),
                          ("page", "page_size", "uri", "agent", "kind", "status", "since", "until"), HISTORY_LIST)
            page = want_number(a, "page", 1, 1_000_000, integer=True) or 1
            size = want_number(a, "page_size", 1, 200, integer=True) or 20
            filters = {k: want_str(a, k) or None for k in ("uri", "agent", "kind", "status")}
            since, until = _parse_time(a, "since"), _parse_time(a, "until")
            return await store_call(ls, history.list_history, page=page, page_size=size, since=since, until=until,
                                    **filters)
        except errors.HapaError as exc:
            raise _guard(ls, HISTORY_LIST, exc) from exc

    @server.command(HISTORY_CLEAR)
    async def history_clear(ls: HapaServer, *args: Any) -> dict[str, Any]:
        try:
            a = normalise(first_object(args, HISTORY_CLEAR), ("confirm", "before"), HISTORY_CLEAR)
            if a.get("confirm") is not True:
                raise errors.MissingField("clearing the history needs \"confirm\": true",
                                        field="confirm")
            before = _parse_time(a, "before")
            n = await store_call(ls, history.clear_history, before=before)
        except errors.HapaError as exc:
            raise _guard(ls, HISTORY_CLEAR, exc) from exc
        return {"cleared": n}

    @server.command(FEEDBACK)
    async def feedback(ls: HapaServer, *args: Any) -> dict[str, Any]:
        try:
            a = normalise(first_object(args, FEEDBACK), ("history_id", "request_id", "rating", "comment"), FEEDBACK)
            hid = want_number(a, "history_id", 1, 2**62, integer=True)
            rid = want_str(a, "request_id")
            if hid is None and not rid:
                raise errors.MissingField("give 'history_id' (from hapa.generateCode / hapa.history.list) or "
                                        "'request_id' (from a suggestion)", field="history_id")
            if "rating" not in a or a["rating"] is None:
                raise errors.MissingField("'rating' is required: 1-5, \"up\" or \"down\"",
                                        field="rating")
            r = a["rating"]
            if r in ("up", "down"):
                rating = 5 if r == "up" else 1
            elif isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= 5:
                rating = r
            else:
                raise errors.InvalidInput(f"'rating' must be 1-5, \"up\" or \"down\", got {r!r}",
                                        field="rating")
            comment = want_str(a, "comment")[:4000]
            if hid is not None and not await store_call(ls, history.history_exists, hid):
                raise errors.InvalidInput(f"no generation with history_id {hid}", field="history_id")
            fid = await store_call(ls, history.record_feedback, "rating", history_id=hid, request_id=rid,
                                   rating=rating, comment=comment)
        except errors.HapaError as exc:
            raise _guard(ls, FEEDBACK, exc) from exc
        return {"recorded": True, "feedback_id": fid, "rating": rating}

    @server.command(FEEDBACK_STATS)
    async def feedback_stats(ls: HapaServer, *args: Any) -> dict[str, Any]:
        try:
            a = normalise(first_object(args, FEEDBACK_STATS), ("since",), FEEDBACK_STATS)
            return await store_call(ls, history.acceptance, since=_parse_time(a, "since"))
        except errors.HapaError as exc:
            raise _guard(ls, FEEDBACK_STATS, exc) from exc

    for name, kind in ((DID_SHOW, "shown"), (DID_PARTIAL, "partial")):
        server.command(name)(_suggestion_event(kind, name))
        # The same events as notifications, for clients that report without a round trip.
        server.feature(name.replace("hapa.", "hapa/"))(_suggestion_notification(kind, name))


def _suggestion_event(kind: str, command: str):
    async def handler(ls: HapaServer, *args: Any) -> dict[str, Any]:
        try:
            info = first_object(args, command)
            await record_suggestion_event(ls, kind, info, command)
        except errors.HapaError as exc:
            raise _guard(ls, command, exc) from exc
        return {"recorded": True}

    return handler


def _suggestion_notification(kind: str, command: str):
    async def handler(ls: HapaServer, params: Any) -> None:
        info = _plain(params)
        try:
            if not isinstance(info, Mapping):
                raise errors.InvalidInput(f"{command} takes one JSON object", field="params")
            await record_suggestion_event(ls, kind, info, command)
        except errors.HapaError as exc:
            ls.record_incident(exc, command)

    return handler


def _plain(obj: Any) -> Any:
    """Custom notification params as plain JSON values (pygls hands them over as named tuples)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


async def record_suggestion_event(ls: HapaServer, kind: str, info: Mapping[str, Any], command: str) -> None:
    """Store one shown / accepted / partially accepted suggestion (the acceptance-rate inputs)."""
    from hapa_lsp import history

    rid = want_str(info, "request_id")
    uri = want_str(info, "uri")
    language = want_str(info, "language")
    model = want_str(info, "model")
    length = want_number(info, "length", 0, 10**9, integer=True) or 0
    accepted = want_number(info, "accepted_length", 0, 10**9, integer=True)
    if kind == "partial" and accepted is None:
        raise errors.MissingField("'accepted_length' is required", field="accepted_length")
    if kind == "accepted":
        accepted = length
    await store_call(ls, history.record_feedback, kind, request_id=rid, uri=uri, language=language, model=model,
                     shown_chars=length, accepted_chars=accepted or 0)


# ---- selections ------------------------------------------------------------------------------------------------------
def full_lines(lines: list[str], rng: types.Range) -> types.Range:
    """A selection widened to whole lines (a selection ending at column 0 stops at the line before)."""
    start, end = rng.start, rng.end
    if (end.line, end.character) < (start.line, start.character):
        start, end = end, start
    last = len(lines) - 1
    s_line = min(start.line, last)
    e_line = min(end.line, last)
    if end.character == 0 and e_line > s_line:
        e_line -= 1
    return types.Range(types.Position(s_line, 0), types.Position(e_line, len(lines[e_line])))


def text_of(lines: list[str], rng: types.Range) -> str:
    """The text of a whole-line range."""
    return "\n".join(lines[rng.start.line:rng.end.line + 1])


async def run_agent(ls: HapaServer, agent: Agent, *, question: str, code: str, language: str, uri: str,
                    doc: TextDocument | None, rng: types.Range | None, profile: Any, temperature: float | None,
                    stream: bool, token: Any, prose: bool) -> dict[str, Any]:
    """Run an agent; code replaces ``rng`` when given, prose answers are shown as a document."""
    from hapa_lsp import generation

    req = generation.Request("agent", question=question, target=code, language=language,
                             path=name_of(doc) if doc else "", profile=profile, agent=agent, temperature=temperature,
                             prose=prose)
    t0 = time.perf_counter()
    try:
        gen, ms = await run_generation(ls, req, uri=uri, title=f"hapa agent: {agent.name}", stream=stream,
                                       token=token)
    except errors.HapaError as exc:
        out = _failure(exc, (time.perf_counter() - t0) * 1000)
        out["agent"] = agent.name
        return out
    if prose:
        gen.explanation, gen.code = gen.raw.strip(), ""
    hid = await record(ls, req, uri=uri, status="success", gen=gen, ms=ms)
    out = _success(gen, ms, req, hid)
    out["agent"] = agent.name
    if prose:
        out["document_uri"] = await explanation_document(ls, f"{agent.name}", gen.explanation)
    elif doc is not None and rng is not None and gen.code.strip():
        from hapa_lsp.generation import reindent

        indent = indent_of(doc_lines(doc)[rng.start.line])
        edit = types.TextEdit(rng, reindent(gen.code, indent))
        out["applied"] = await apply_edit(ls, workspace_edit(ls, uri, doc.version, [edit]),
                                          f"hapa agent: {agent.name}")
        if out["applied"]:
            diags = edit_diagnostics(edit, gen.report)
            if diags:
                publish_issues(ls, uri, diags)
    return out
