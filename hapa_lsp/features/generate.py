"""workspace/executeCommand for generations and their history: hapa.generateCode, hapa.agent.run / list,
hapa.explain, hapa.validateCode, hapa.showIssues, hapa.history.*, hapa.feedback*, and the suggestion events
(hapa.didShowCompletion, hapa.didPartiallyAcceptCompletion, as commands and as notifications).

Each handler: structure its arguments (``features.args``), check what needs the session (open document, size,
agent), run (``features.running``), answer. Failures go through the one ``boundary``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from hapa_lsp import errors
from hapa_lsp.context import budget_window, split_at
from hapa_lsp.documents import name_of
from hapa_lsp.edits import edit_diagnostics, full_lines, indent_of, insertion_at, reindent, text_of
from hapa_lsp.features import args as A
from hapa_lsp.features.common import (AGENT_LIST, AGENT_RUN, DID_PARTIAL, DID_SHOW, EXPLAIN, FEEDBACK, FEEDBACK_STATS,
                                      GENERATE, HISTORY_CLEAR, HISTORY_LIST, SHOW_ISSUES, VALIDATE, LazyModule,
                                      arguments, boundary, document_for_model, first_object, language_of,
                                      position_encoding)
from hapa_lsp.features.running import (apply_edit, check_size, explanation_document, failure, find_agent,
                                       link_request_cancel, publish_issues, record, record_suggestion_event,
                                       run_generation, store_call, success, workspace_edit)

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.config import Agent
    from hapa_lsp.server import HapaServer

generation = LazyModule("hapa_lsp.generation")
history = LazyModule("hapa_lsp.history")
validation = LazyModule("hapa_lsp.validation")


def register(server: HapaServer) -> None:
    """Register the generation, agent, validation, history and feedback commands."""

    @server.command(GENERATE)
    @boundary(GENERATE)
    async def generate_code(ls: HapaServer, *args: Any) -> dict[str, Any]:
        token = link_request_cancel(ls)
        a = arguments(ls, args, A.GenerateArgs, GENERATE)
        language = a.language or "python"
        profile = generation.Profile.from_settings(ls.settings.profile).merged(a.user_profile)
        code_context = a.code_context
        check_size(ls, a.user_question, "user_question")
        check_size(ls, code_context, "code_context")
        doc = None
        if a.uri:
            if a.position is None:
                raise errors.MissingField("'position' is required with 'uri'", field="position")
            doc = document_for_model(ls, a.uri)
            language = a.language or language_of(doc)
            if not code_context:
                s = ls.settings.context
                cur = split_at(doc.source, a.position.line, a.position.character, position_encoding(ls))
                budget = s.generation_max_prompt_tokens // 2
                win = budget_window(cur, max_tokens=budget, prefix_ratio=s.prefix_ratio,
                                    chars_per_token=s.chars_per_token)
                code_context = win.prefix + win.suffix
        elif a.position is not None:
            raise errors.MissingField("'uri' is required with 'position'", field="uri")
        req = generation.GenerationRequest("generate", question=a.user_question, code_context=code_context,
                                 language=language, path=name_of(doc) if doc else "", profile=profile,
                                 temperature=a.temperature)
        t0 = time.perf_counter()
        try:
            gen, ms = await run_generation(ls, req, uri=a.uri, title="hapa: generating code", stream=a.stream,
                                           token=token)
        except errors.HapaError as exc:
            return failure(exc, (time.perf_counter() - t0) * 1000)
        hid = await record(ls, req, uri=a.uri, status="success", gen=gen, ms=ms)
        out = success(gen, ms, req, hid)
        if doc is not None and a.position is not None:
            edit = insertion_at(doc.source.split("\n"), a.position.line, gen.code)
            applied = await apply_edit(ls, workspace_edit(ls, a.uri, doc.version, [edit]), "hapa: generate code")
            out["applied"] = applied
            if applied:
                diags = edit_diagnostics(edit, gen.report)
                if diags:
                    publish_issues(ls, a.uri, diags)
        return out

    @server.command(AGENT_LIST)
    @boundary(AGENT_LIST)
    def agent_list(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return {"agents": [{"name": a.name, "description": a.description, "model": a.model or None,
                            "temperature": a.temperature, "applies_to": list(a.applies_to)}
                           for a in ls.settings.agents.presets]}

    @server.command(AGENT_RUN)
    @boundary(AGENT_RUN)
    async def agent_run(ls: HapaServer, *args: Any) -> dict[str, Any]:
        token = link_request_cancel(ls)
        a = arguments(ls, args, A.AgentArgs, AGENT_RUN)
        agent = find_agent(ls, a.name)
        profile = generation.Profile.from_settings(ls.settings.profile).merged(a.user_profile)
        code, language = a.code, a.language or "python"
        doc = None
        rng = None
        if a.uri:
            doc = document_for_model(ls, a.uri)
            language = a.language or language_of(doc)
            if a.range is not None:
                lines = doc.source.split("\n")
                rng = full_lines(lines, _lsp_range(a.range))
                code = code or text_of(lines, rng)
            else:
                code = code or doc.source
        if not (a.question.strip() or code.strip()):
            raise errors.MissingField("give 'question', 'code' or a document 'uri' for the agent to work on",
                                      field="code")
        check_size(ls, code, "range" if rng is not None else ("uri" if doc is not None else "code"))
        prose = rng is None and (doc is not None or "selection" not in agent.applies_to)
        return await _run_agent(ls, agent, question=a.question, code=code, language=language, uri=a.uri, doc=doc,
                                rng=rng, profile=profile, temperature=a.temperature, stream=a.stream, token=token,
                                prose=prose)

    @server.command(EXPLAIN)
    @boundary(EXPLAIN)
    async def explain(ls: HapaServer, *args: Any) -> dict[str, Any]:
        token = link_request_cancel(ls)
        a = arguments(ls, args, A.ExplainArgs, EXPLAIN)
        doc = document_for_model(ls, a.uri)
        lines = doc.source.split("\n")
        rng = full_lines(lines, _lsp_range(a.range))
        check_size(ls, text_of(lines, rng), "range")
        profile = generation.Profile.from_settings(ls.settings.profile).merged(a.user_profile)
        req = generation.GenerationRequest("explain", target=text_of(lines, rng), language=language_of(doc),
                                 path=name_of(doc), profile=profile)
        t0 = time.perf_counter()
        try:
            gen, ms = await run_generation(ls, req, uri=a.uri, title="hapa: explaining", stream=a.stream,
                                           token=token)
        except errors.HapaError as exc:
            return failure(exc, (time.perf_counter() - t0) * 1000)
        gen.explanation, gen.code = gen.raw.strip(), ""
        hid = await record(ls, req, uri=a.uri, status="success", gen=gen, ms=ms)
        shown = await explanation_document(ls, f"Explanation of {os.path.basename(name_of(doc))} lines "
                                           f"{rng.start.line + 1}-{rng.end.line + 1}", gen.explanation)
        return {"status": "success", "explanation": gen.explanation, "document_uri": shown, "history_id": hid,
                "response_time_ms": round(ms, 1), "model": gen.model}

    @server.command(VALIDATE)
    @boundary(VALIDATE)
    def validate_code(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.ValidateArgs, VALIDATE)
        report = validation.validate(a.code, a.language or "python")
        out = report.to_dict()
        if not report.parses and report.syntax_error is not None:
            out["error"] = errors.ValidationFailed(report.syntax_error.describe(), field="code").to_data()
        return out

    @server.command(SHOW_ISSUES)
    @boundary(SHOW_ISSUES)
    def show_issues(ls: HapaServer, *args: Any) -> None:
        # Run by the client after it applied a code action's edit: the issues go on the inserted range.
        a = first_object(args, SHOW_ISSUES)
        uri = a.get("uri")
        if not isinstance(uri, str) or not uri:
            raise errors.MissingField("the field 'uri' is required", field="uri")
        raw = a.get("diagnostics")
        if not isinstance(raw, list):
            raise errors.InvalidInput("'diagnostics' must be a list", field="diagnostics")
        try:
            diags = [ls.protocol.from_json(d, types.Diagnostic) for d in raw]
        except Exception as exc:  # noqa: BLE001 - malformed diagnostics from a client (cattrs' errors)
            raise errors.InvalidInput("malformed diagnostics", field="diagnostics") from exc
        publish_issues(ls, uri, diags)

    @server.command(HISTORY_LIST)
    @boundary(HISTORY_LIST)
    async def history_list(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.HistoryListArgs, HISTORY_LIST)
        return await store_call(ls, history.list_history, page=a.page, page_size=a.page_size, since=a.since,
                                until=a.until, uri=a.uri or None, agent=a.agent or None, kind=a.kind or None,
                                status=a.status or None)

    @server.command(HISTORY_CLEAR)
    @boundary(HISTORY_CLEAR)
    async def history_clear(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.HistoryClearArgs, HISTORY_CLEAR)
        if a.confirm is not True:
            raise errors.MissingField("clearing the history needs \"confirm\": true", field="confirm")
        return {"cleared": await store_call(ls, history.clear_history, before=a.before)}

    @server.command(FEEDBACK)
    @boundary(FEEDBACK)
    async def feedback(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.FeedbackArgs, FEEDBACK)
        if a.history_id is None and not a.request_id:
            raise errors.MissingField("give 'history_id' (from hapa.generateCode / hapa.history.list) or "
                                      "'request_id' (from a suggestion)", field="history_id")
        if a.rating is None:
            raise errors.MissingField("'rating' is required: 1-5, \"up\" or \"down\"", field="rating")
        rating = {"up": 5, "down": 1}.get(a.rating, a.rating) if isinstance(a.rating, str) else a.rating
        if not isinstance(rating, int) or not 1 <= rating <= 5:
            raise errors.InvalidInput(f"'rating' must be 1-5, \"up\" or \"down\", got {a.rating!r}", field="rating")
        hid = a.history_id
        if hid is not None and not await store_call(ls, history.history_exists, hid):
            raise errors.InvalidInput(f"no generation with history_id {hid}", field="history_id")
        fid = await store_call(ls, history.record_feedback, "rating", history_id=hid, request_id=a.request_id,
                               rating=rating, comment=a.comment[:4000])
        return {"recorded": True, "feedback_id": fid, "rating": rating}

    @server.command(FEEDBACK_STATS)
    @boundary(FEEDBACK_STATS)
    async def feedback_stats(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.FeedbackStatsArgs, FEEDBACK_STATS)
        return await store_call(ls, history.acceptance, since=a.since)

    for name, kind in ((DID_SHOW, "shown"), (DID_PARTIAL, "partial")):
        server.command(name)(boundary(name)(_suggestion_event(kind, name)))
        # The same events as notifications, for clients that report without a round trip.
        server.feature(name.replace("hapa.", "hapa/"))(
            boundary(name, notification=True)(_suggestion_notification(kind, name)))


def _suggestion_event(kind: str, command: str):
    async def handler(ls: HapaServer, *args: Any) -> dict[str, Any]:
        await record_suggestion_event(ls, kind, arguments(ls, args, A.SuggestionEventArgs, command))
        return {"recorded": True}

    return handler


def _suggestion_notification(kind: str, command: str):
    async def handler(ls: HapaServer, params: Any) -> None:
        info = _plain(params)
        if not isinstance(info, Mapping):
            raise errors.InvalidInput(f"{command} takes one JSON object", field="params")
        await record_suggestion_event(ls, kind, arguments(ls, (info,), A.SuggestionEventArgs, command))

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


def _lsp_range(r: A.RangeArg) -> types.Range:
    return types.Range(types.Position(r.start.line, r.start.character), types.Position(r.end.line, r.end.character))


async def _run_agent(ls: HapaServer, agent: Agent, *, question: str, code: str, language: str, uri: str,
                     doc: TextDocument | None, rng: types.Range | None, profile: Any, temperature: float | None,
                     stream: bool, token: Any, prose: bool) -> dict[str, Any]:
    """Run an agent; code replaces ``rng`` when given, prose answers are shown as a document."""
    req = generation.GenerationRequest("agent", question=question, target=code, language=language,
                             path=name_of(doc) if doc else "", profile=profile, agent=agent, temperature=temperature,
                             prose=prose)
    t0 = time.perf_counter()
    try:
        gen, ms = await run_generation(ls, req, uri=uri, title=f"hapa agent: {agent.name}", stream=stream,
                                       token=token)
    except errors.HapaError as exc:
        out = failure(exc, (time.perf_counter() - t0) * 1000)
        out["agent"] = agent.name
        return out
    if prose:
        gen.explanation, gen.code = gen.raw.strip(), ""
    hid = await record(ls, req, uri=uri, status="success", gen=gen, ms=ms)
    out = success(gen, ms, req, hid)
    out["agent"] = agent.name
    if prose:
        out["document_uri"] = await explanation_document(ls, f"{agent.name}", gen.explanation)
    elif doc is not None and rng is not None and gen.code.strip():
        edit = types.TextEdit(rng, reindent(gen.code, indent_of(doc.source.split("\n")[rng.start.line])))
        out["applied"] = await apply_edit(ls, workspace_edit(ls, uri, doc.version, [edit]),
                                          f"hapa agent: {agent.name}")
        if out["applied"]:
            diags = edit_diagnostics(edit, gen.report)
            if diags:
                publish_issues(ls, uri, diags)
    return out
