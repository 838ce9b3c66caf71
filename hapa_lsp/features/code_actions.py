"""textDocument/codeAction, codeAction/resolve and hapa.codeAction.apply: code actions that generate code.

Listed from the text alone (``hapa_lsp.targets`` finds the comment, TODO or stub; no model call), computed in
codeAction/resolve (or by the apply command for clients without resolve): a generation through
``features.running``, its code placed with ``hapa_lsp.edits``.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.uris import from_fs_path

from hapa_lsp import errors
from hapa_lsp.documents import find_open, fs_path, name_of
from hapa_lsp.edits import edit_diagnostics, full_lines, indent_of, insert_below, module_name, reindent, text_of
from hapa_lsp.features.args import RangeArg, structure_object
from hapa_lsp.features.common import (AGENT_RUN, APPLY_CODE_ACTION, EXPLAIN, SHOW_ISSUES, LazyModule, boundary,
                                      first_object, language_of, open_document)
from hapa_lsp.features.running import (apply_edit, check_size, find_agent, link_request_cancel, publish_issues,
                                       record, run_generation, workspace_edit)
from hapa_lsp.protocol import resolve_supports
from hapa_lsp.targets import comment_block, stub_at

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.config import Agent
    from hapa_lsp.server import HapaServer

generation = LazyModule("hapa_lsp.generation")

KIND_GENERATE = "refactor.rewrite.hapa.generate"
KIND_EXPLAIN = "refactor.hapa.explain"
KIND_REFACTOR = "refactor.rewrite.hapa.refactor"
KIND_DOCUMENT = "refactor.rewrite.hapa.document"
KIND_TESTS = "source.hapa.tests"
KIND_AGENT = "refactor.rewrite.hapa.agent"
KIND_AGENT_FILE = "source.hapa.agent"
KINDS = [KIND_GENERATE, KIND_EXPLAIN, KIND_REFACTOR, KIND_DOCUMENT, KIND_TESTS, KIND_AGENT, KIND_AGENT_FILE]
APPLY_COMMAND = APPLY_CODE_ACTION

#: The rate-limit rule code-action generations count against.
GENERATION_RULE = "hapa.generateCode"











def _only_allows(only: Any, kind: str) -> bool:
    if not only:
        return True
    return any(kind == o or kind.startswith(o + ".") or o == "" for o in only)


def list_actions(ls: HapaServer, doc: TextDocument, rng: types.Range, only: Any) -> list[types.CodeAction]:
    """The actions for a range, from the text alone; each carries ``data`` for resolve."""
    language = language_of(doc)
    lines = doc.source.split("\n")
    row = min(rng.start.line, max(0, len(lines) - 1))
    base = {"uri": doc.uri, "version": doc.version}
    out: list[types.CodeAction] = []

    def add(title: str, kind: str, data: dict[str, Any] | None = None, command: types.Command | None = None,
            preferred: bool = False) -> None:
        if _only_allows(only, kind):
            out.append(types.CodeAction(title=title, kind=kind, data={**base, **data} if data else None,
                                        command=command, is_preferred=preferred or None))

    selected = (rng.start.line, rng.start.character) != (rng.end.line, rng.end.character)
    sel = {"start": {"line": rng.start.line, "character": rng.start.character},
           "end": {"line": rng.end.line, "character": rng.end.character}}
    comment = comment_block(lines, row)
    if comment is not None:
        title = "hapa: Implement TODO" if comment.kind == "todo" else "hapa: Generate code from comment"
        add(title, KIND_GENERATE, {"action": comment.kind, "start": comment.start, "end": comment.end},
            preferred=True)
    elif language == "python":
        stub = stub_at(lines, row)
        if stub is not None:
            t, _, _ = stub
            add("hapa: Generate function body", KIND_GENERATE, {"action": "stub", "start": t.start, "end": t.end},
                preferred=True)
    if selected:
        add("hapa: Explain", KIND_EXPLAIN, {"action": "explain", "range": sel})
        add("hapa: Refactor", KIND_REFACTOR, {"action": "refactor", "range": sel})
        if language == "python":
            add("hapa: Add docstring and type hints", KIND_DOCUMENT, {"action": "document", "range": sel})
            add("hapa: Write tests", KIND_TESTS, {"action": "tests", "range": sel})
    for agent in ls.settings.agents.presets:
        label = f"hapa agent: {agent.name}" + (f" ({agent.description})" if agent.description else "")
        if selected and "selection" in agent.applies_to:
            add(label, f"{KIND_AGENT}.{_slug(agent.name)}", {"action": "agent", "agent": agent.name, "range": sel})
        elif comment is not None and "comment" in agent.applies_to:
            add(label, f"{KIND_AGENT}.{_slug(agent.name)}",
                {"action": "agent", "agent": agent.name, "start": comment.start, "end": comment.end})
    for agent in ls.settings.agents.presets:  # whole-file agents last: they are offered anywhere in the file
        label = f"hapa agent: {agent.name}" + (f" ({agent.description})" if agent.description else "")
        if "file" in agent.applies_to:
            add(label + " on this file", f"{KIND_AGENT_FILE}.{_slug(agent.name)}",
                {"action": "agent-file", "agent": agent.name})
    return out


def command_for(data: dict[str, Any]) -> types.Command | None:
    """Actions that answer in prose run as a command (the answer is shown, the source is not edited)."""
    if data.get("action") == "explain":
        return types.Command(title="hapa: Explain", command=EXPLAIN,
                             arguments=[{"uri": data["uri"], "range": data["range"]}])
    if data.get("action") == "agent-file":
        return types.Command(title=f"hapa agent: {data.get('agent')}", command=AGENT_RUN,
                             arguments=[{"name": data.get("agent"), "uri": data["uri"]}])
    return None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or "agent"


# ---- resolve -------------------------------------------------------------------------------------------------------
def _tests_target(ls: HapaServer, doc: TextDocument) -> tuple[str, str, bool]:
    """(path, uri, exists) of ``tests/test_<module>.py`` under the workspace root; when the editor has that file
    open, its URI as the editor spelled it (so the edit lands in the open buffer)."""
    here = fs_path(doc)
    root = ls.root_path or (os.path.dirname(here) if here else None)
    if not root:
        raise errors.PermissionDenied("this document is not a file and no workspace folder is open: there is no "
                                "place for a tests file; save the file first", field="uri")
    stem = os.path.splitext(os.path.basename(name_of(doc)))[0]
    path = os.path.join(root, "tests", f"test_{stem}.py")
    uri = from_fs_path(path) or path
    open_doc = find_open(ls.workspace, uri)
    if open_doc is not None:
        return path, open_doc.uri, True
    return path, uri, os.path.exists(path)


async def compute_edit(ls: HapaServer, data: dict[str, Any], *, stream: bool = True
                       ) -> tuple[types.WorkspaceEdit, types.Command | None, str]:
    """Run the model for an action's ``data``; returns the edit, an optional issues command, and a title note."""
    if not isinstance(data, dict) or "uri" not in data or "action" not in data:
        raise errors.InvalidInput("the code action has no hapa data", field="data")
    uri = data["uri"]
    doc = open_document(ls, uri)
    language = language_of(doc)
    why_not = ls.engine.applies_to(name_of(doc), language)
    if why_not is not None:
        raise why_not
    version = data.get("version")
    if version is not None and doc.version is not None and version != doc.version:
        # The lines the action was computed for may have moved; an edit now could land in the wrong place.
        raise errors.InvalidInput("the document changed since this action was offered; ask for code actions again", field="data.version")
    lines = doc.source.split("\n")
    action = data["action"]
    profile = generation.Profile.from_settings(ls.settings.profile)
    agent: Agent | None = find_agent(ls, data.get("agent", "")) if action == "agent" else None
    last = len(lines) - 1
    if "range" in data:
        rng = full_lines(lines, _range_of(ls, data["range"]))
    else:
        s, e = min(int(data.get("start", 0)), last), min(int(data.get("end", 0)), last)
        rng = types.Range(types.Position(s, 0), types.Position(e, len(lines[e])))
    target = text_of(lines, rng)
    check_size(ls, target, "range")
    ctx_lo, ctx_hi = max(0, rng.start.line - 60), min(len(lines), rng.end.line + 40)
    context = "\n".join(lines[ctx_lo:ctx_hi])
    task = {"comment": "implement", "todo": "implement", "stub": "implement", "refactor": "refactor",
            "document": "document", "tests": "tests", "agent": "agent"}.get(action)
    if task is None:
        raise errors.InvalidInput(f"unknown code action {action!r}", field="data.action")
    # A code action's generation is a code generation: it counts against the same limit as hapa.generateCode,
    # whichever way it runs (resolve, the eager path for clients without resolve, the apply command).
    ls.rate_limiter.check(GENERATION_RULE)
    module = module_name(name_of(doc), ls.root_path) if action == "tests" else ""
    req = generation.GenerationRequest(task, target=target, code_context=context if task != "tests" else "",
                             language=language, path=name_of(doc), module=module, profile=profile, agent=agent)
    gen, ms = await run_generation(ls, req, uri=uri, title=f"hapa: {action}", stream=stream)
    ls.keep(asyncio.ensure_future(record(ls, req, uri=uri, status="success", gen=gen, ms=ms)))
    code = gen.code
    first = lines[rng.start.line]
    if action == "tests":
        path, t_uri, exists = _tests_target(ls, doc)
        if exists:
            t_doc = find_open(ls.workspace, t_uri)
            if t_doc is not None:
                t_text, version = t_doc.source, t_doc.version
            else:
                t_text = await asyncio.get_running_loop().run_in_executor(None, _read, path)
                version = None
            t_lines = t_text.split("\n")
            end = types.Position(len(t_lines) - 1, len(t_lines[-1]))
            sep = "" if not t_text.strip() else ("\n\n" if t_text.endswith("\n") else "\n\n\n")
            edit = types.TextEdit(types.Range(end, end), sep + code.strip("\n") + "\n")
            return workspace_edit(ls, t_uri, version, [edit]), None, ""
        start = types.Position(0, 0)
        edit = types.TextEdit(types.Range(start, start), code.strip("\n") + "\n")
        return workspace_edit(ls, t_uri, None, [edit], create=True), None, ""
    if action == "comment" or (action == "agent" and "range" not in data):
        indent = indent_of(first)
        edit = insert_below(lines, rng.end.line, reindent(code, indent))
    elif action == "stub":
        d_indent = indent_of(first)
        stub = stub_at(lines, rng.start.line)
        if re.search(r"^\s*(async\s+)?def\s", code, re.M) or stub is None:
            if rng.start.line > 0 and lines[rng.start.line - 1].strip().startswith("@"):
                # The file's decorators stay above the def; drop the copies a model tends to repeat.
                code = re.sub(r"\A(?:[ \t]*@[^\n]*\n)+", "", code)
            edit = types.TextEdit(rng, reindent(code, d_indent))
        else:
            _, _, stmt = stub
            s_line = lines[stmt]
            edit = types.TextEdit(types.Range(types.Position(stmt, 0), types.Position(stmt, len(s_line))),
                                  reindent(code, indent_of(s_line)))
    else:  # todo, refactor, document, agent on a selection: replace the lines
        edit = types.TextEdit(rng, reindent(code, indent_of(first)))
    wedit = workspace_edit(ls, uri, doc.version, [edit])
    diags = edit_diagnostics(edit, gen.report)
    if not diags:
        return wedit, None, ""
    raw = [ls.protocol.to_json(d) for d in diags]
    cmd = types.Command(title="hapa: show issues in generated code", command=SHOW_ISSUES,
                        arguments=[{"uri": uri, "diagnostics": raw}])
    return wedit, cmd, f" (⚠ {len(diags)} issue{'s' if len(diags) > 1 else ''}: " + \
        ", ".join(sorted({d.code for d in diags if isinstance(d.code, str)})) + ")"


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _range_of(ls: HapaServer, raw: Any) -> types.Range:
    """An action's ``data.range`` (as list_actions wrote it; a client may send it back changed)."""
    if not isinstance(raw, dict):
        raise errors.InvalidInput("'data.range' must be an object {start, end}", field="data.range")
    try:
        r = structure_object(ls.protocol.converter, raw, RangeArg, "codeAction data")
    except errors.HapaError as exc:
        exc.field = f"data.range.{exc.field}" if exc.field else "data.range"
        raise
    return types.Range(types.Position(r.start.line, r.start.character), types.Position(r.end.line, r.end.character))


def register(server: HapaServer) -> None:
    """Register textDocument/codeAction, codeAction/resolve and the apply command for clients without resolve."""

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=True))
    @boundary(types.TEXT_DOCUMENT_CODE_ACTION)
    async def code_action(ls: HapaServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        try:
            doc = open_document(ls, params.text_document.uri)
        except errors.DocumentNotOpen:
            return None
        if ls.engine.applies_to(name_of(doc), language_of(doc)) is not None:
            return None
        only = params.context.only if params.context else None
        actions = list_actions(ls, doc, params.range, only)
        if not actions or resolve_supports(ls, "edit"):
            return actions or None
        trigger = params.context.trigger_kind if params.context else None
        # Computing an edit is a whole generation: eagerly only when it is the one on offer. With several (eglot
        # 1.9 on a comment lists five), the menu would wait for every one of them and spend the rate limit on
        # actions nobody picks, so each runs on choice instead.
        eager = trigger != types.CodeActionTriggerKind.Automatic and \
            sum(command_for(a.data or {}) is None for a in actions) == 1
        out = []
        for a in actions:
            cmd = command_for(a.data or {})
            if cmd is not None:
                out.append(types.CodeAction(title=a.title, kind=a.kind, command=cmd))
            elif not eager:
                # No resolve and no explicit request for a single action: never call the model for the menu.
                out.append(types.CodeAction(title=a.title, kind=a.kind, is_preferred=a.is_preferred,
                                            command=types.Command(title=a.title, command=APPLY_COMMAND,
                                                                  arguments=[a.data])))
            else:
                try:
                    a.edit, a.command, note = await compute_edit(ls, a.data, stream=False)
                    a.title += note
                    a.data = None
                    out.append(a)
                except errors.HapaError as exc:  # one action failing is that action disabled, not the list
                    out.append(types.CodeAction(title=a.title, kind=a.kind, disabled=types.CodeActionDisabled(
                        reason=exc.message)))
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    @boundary(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: HapaServer, action: types.CodeAction) -> types.CodeAction:
        if action.data is None or action.edit is not None:
            return action
        cmd = command_for(action.data) if isinstance(action.data, dict) else None
        if cmd is not None:
            action.command = cmd
            return action
        action.edit, cmd, note = await compute_edit(ls, action.data)
        if cmd is not None:
            action.command = cmd
        action.title += note
        return action

    @server.command(APPLY_COMMAND)
    @boundary(APPLY_COMMAND)
    async def apply(ls: HapaServer, *args: Any) -> dict[str, Any]:
        link_request_cancel(ls)
        data = first_object(args, APPLY_COMMAND)
        edit, cmd, _ = await compute_edit(ls, data)
        applied = await apply_edit(ls, edit, "hapa: code action")
        if applied and cmd is not None and cmd.arguments:
            diags = [ls.protocol.from_json(d, types.Diagnostic) for d in cmd.arguments[0]["diagnostics"]]
            publish_issues(ls, data["uri"], diags)
        return {"applied": applied}
