"""Code actions that generate code: listed from the text alone (no model call), computed in codeAction/resolve."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from hapa_lsp import errors
from hapa_lsp.documents import find_open, fs_path, name_of
from hapa_lsp.protocol import resolve_supports, rpc_error
# Imported at run time: pygls resolves command handlers' annotations with typing.get_type_hints.
from hapa_lsp.server import HapaServer  # noqa: TC001

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

    from hapa_lsp.config import Agent

KIND_GENERATE = "refactor.rewrite.hapa.generate"
KIND_EXPLAIN = "refactor.hapa.explain"
KIND_REFACTOR = "refactor.rewrite.hapa.refactor"
KIND_DOCUMENT = "refactor.rewrite.hapa.document"
KIND_TESTS = "source.hapa.tests"
KIND_AGENT = "refactor.rewrite.hapa.agent"
KIND_AGENT_FILE = "source.hapa.agent"
KINDS = [KIND_GENERATE, KIND_EXPLAIN, KIND_REFACTOR, KIND_DOCUMENT, KIND_TESTS, KIND_AGENT, KIND_AGENT_FILE]
APPLY_COMMAND = "hapa.codeAction.apply"

_DEF = re.compile(r"^(\s*)(async\s+)?def\s+\w+")
_TODO = re.compile(r"^\s*(#|//)\s*(TODO|FIXME)\b[:\s]*(.*)$")
_COMMENT = re.compile(r"^\s*(#|//)\s?(.*)$")
# Comments that are machinery, not a description of code.
_NOT_A_DESCRIPTION = re.compile(r"^(!|-\*-|\s*(type|noqa|pragma|fmt|pylint|mypy|isort|region|endregion)\b)")
_STUB = re.compile(r"^(\.\.\.|pass|raise\s+NotImplementedError\b.*)$")
_SCAN_UP = 400  # lines looked at above the cursor for an enclosing stub


@dataclass(frozen=True, slots=True)
class Target:
    """Where an action acts: a line range (inclusive, 0-based) and what is there."""

    kind: str  # comment, todo, stub
    start: int
    end: int


#: The rate-limit rule code-action generations count against.
GENERATION_RULE = "hapa.generateCode"

def _comment_text(line: str) -> str | None:
    m = _COMMENT.match(line)
    return m.group(2).strip() if m else None


def comment_block(lines: list[str], row: int) -> Target | None:
    """The comment lines around ``row`` when they describe code (a TODO, or three words or more)."""
    if row >= len(lines):
        return None
    line = lines[row]
    text = _comment_text(line)
    if text is None or (row == 0 and line.startswith("#!")) or _NOT_A_DESCRIPTION.match(text):
        return None
    if _TODO.match(line):
        return Target("todo", row, row)
    indent = len(line) - len(line.lstrip())
    start = end = row
    while start > 0 and _comment_text(lines[start - 1]) is not None and \
            len(lines[start - 1]) - len(lines[start - 1].lstrip()) == indent and not _TODO.match(lines[start - 1]):
        start -= 1
    while end + 1 < len(lines) and _comment_text(lines[end + 1]) is not None and \
            len(lines[end + 1]) - len(lines[end + 1].lstrip()) == indent and not _TODO.match(lines[end + 1]):
        end += 1
    words = " ".join(_comment_text(lines[i]) or "" for i in range(start, end + 1)).split()
    if len(words) < 3 or _commented_out_code(lines, start, end):
        return None
    return Target("comment", start, end)


def _commented_out_code(lines: list[str], start: int, end: int) -> bool:
    """True for ``# total = sum(prices)``: code switched off, not a description of code to write."""
    import ast

    text = "\n".join(_comment_text(lines[i]) or "" for i in range(start, end + 1))
    if not any(c in text for c in "=()[]:"):
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def stub_at(lines: list[str], row: int) -> tuple[Target, int, int] | None:
    """The function whose body is only a docstring and ``...``/``pass``/``raise NotImplementedError``, around ``row``.

    Returns (target from the ``def`` line to the end of the body, first body line, stub statement line).
    """
    lo = max(0, row - _SCAN_UP)
    for d in range(min(row, len(lines) - 1), lo - 1, -1):
        m = _DEF.match(lines[d])
        if not m:
            continue
        def_indent = len(m.group(1))
        # The signature may span lines; it ends at the first line whose code ends with a colon.
        sig_end = d
        while sig_end < len(lines) and not lines[sig_end].split("#", 1)[0].rstrip().endswith(":"):
            sig_end += 1
            if sig_end - d > 30:
                return None
        if sig_end >= len(lines):
            return None
        body: list[int] = []
        i = sig_end + 1
        while i < len(lines):
            ln = lines[i]
            if ln.strip() and _indent(ln) <= def_indent:
                break
            body.append(i)
            i += 1
        while body and not lines[body[-1]].strip():
            body.pop()
        if not body:
            return None
        end = body[-1]
        if row > end:
            return None  # the nearest def above ends before the cursor: the cursor is not in a stub
        stmts = [j for j in body if lines[j].strip() and not lines[j].lstrip().startswith("#")]
        # Skip a leading docstring (one or more lines).
        if stmts:
            first = lines[stmts[0]].strip()
            q = first[:3] if first[:3] in ('"""', "'''") else (first[:4][1:] if first[:1] in "rRuU" and
                                                                 first[1:4] in ('"""', "'''") else "")
            if q:
                rest = first[first.index(q) + 3:]
                if q in rest:
                    stmts = stmts[1:]
                else:
                    k = 1
                    while k < len(stmts) and q not in lines[stmts[k]]:
                        k += 1
                    stmts = stmts[k + 1:]
        if len(stmts) != 1 or not _STUB.match(lines[stmts[0]].strip()):
            return None
        return Target("stub", d, end), sig_end + 1, stmts[0]
    return None


def _only_allows(only: Any, kind: str) -> bool:
    if not only:
        return True
    return any(kind == o or kind.startswith(o + ".") or o == "" for o in only)


def _resolve_supported(ls: HapaServer) -> bool:
    return resolve_supports(ls, "edit")


def list_actions(ls: HapaServer, doc: TextDocument, rng: types.Range, only: Any) -> list[types.CodeAction]:
    """The actions for a range, from the text alone; each carries ``data`` for resolve."""
    from hapa_lsp.features.common import language_of

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
        from hapa_lsp.features.generate import EXPLAIN

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
    from hapa_lsp.features.generate import AGENT_RUN, EXPLAIN

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
    from pygls.uris import from_fs_path

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
    import asyncio

    from hapa_lsp import generation
    from hapa_lsp.features import generate as g
    from hapa_lsp.features.common import language_of, open_document

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
    lines = g.doc_lines(doc)
    action = data["action"]
    profile = generation.Profile.from_settings(ls.settings.profile)
    agent: Agent | None = g.find_agent(ls, data.get("agent", "")) if action == "agent" else None
    last = len(lines) - 1
    if "range" in data:
        rng = g.full_lines(lines, g.want_range(data["range"], "data.range"))
    else:
        s, e = min(int(data.get("start", 0)), last), min(int(data.get("end", 0)), last)
        rng = types.Range(types.Position(s, 0), types.Position(e, len(lines[e])))
    target = g.text_of(lines, rng)
    g.check_size(ls, target, "range")
    ctx_lo, ctx_hi = max(0, rng.start.line - 60), min(len(lines), rng.end.line + 40)
    context = "\n".join(lines[ctx_lo:ctx_hi])
    task = {"comment": "implement", "todo": "implement", "stub": "implement", "refactor": "refactor",
            "document": "document", "tests": "tests", "agent": "agent"}.get(action)
    if task is None:
        raise errors.InvalidInput(f"unknown code action {action!r}", field="data.action")
    # A code action's generation is a code generation: it counts against the same limit as hapa.generateCode,
    # whichever way it runs (resolve, the eager path for clients without resolve, the apply command).
    ls.rate_limiter.check(GENERATION_RULE)
    module = g.module_name(name_of(doc), ls.root_path) if action == "tests" else ""
    req = generation.Request(task, target=target, code_context=context if task != "tests" else "",
                             language=language, path=name_of(doc), module=module, profile=profile, agent=agent)
    gen, ms = await g.run_generation(ls, req, uri=uri, title=f"hapa: {action}", stream=stream)
    ls.keep(asyncio.ensure_future(g.record(ls, req, uri=uri, status="success", gen=gen, ms=ms)))
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
            return g.workspace_edit(ls, t_uri, version, [edit]), None, ""
        start = types.Position(0, 0)
        edit = types.TextEdit(types.Range(start, start), code.strip("\n") + "\n")
        return g.workspace_edit(ls, t_uri, None, [edit], create=True), None, ""
    if action == "comment" or (action == "agent" and "range" not in data):
        indent = g.indent_of(first)
        edit = _insert_below(lines, rng.end.line, generation.reindent(code, indent))
    elif action == "stub":
        d_indent = g.indent_of(first)
        stub = stub_at(lines, rng.start.line)
        if re.search(r"^\s*(async\s+)?def\s", code, re.M) or stub is None:
            if rng.start.line > 0 and lines[rng.start.line - 1].strip().startswith("@"):
                # The file's decorators stay above the def; drop the copies a model tends to repeat.
                code = re.sub(r"\A(?:[ \t]*@[^\n]*\n)+", "", code)
            edit = types.TextEdit(rng, generation.reindent(code, d_indent))
        else:
            _, _, stmt = stub
            s_line = lines[stmt]
            edit = types.TextEdit(types.Range(types.Position(stmt, 0), types.Position(stmt, len(s_line))),
                                  generation.reindent(code, g.indent_of(s_line)))
    else:  # todo, refactor, document, agent on a selection: replace the lines
        edit = types.TextEdit(rng, generation.reindent(code, g.indent_of(first)))
    wedit = g.workspace_edit(ls, uri, doc.version, [edit])
    diags = g.edit_diagnostics(edit, gen.report)
    if not diags:
        return wedit, None, ""
    raw = [ls.protocol.to_json(d) for d in diags]
    cmd = types.Command(title="hapa: show issues in generated code", command=g.SHOW_ISSUES,
                        arguments=[{"uri": uri, "diagnostics": raw}])
    return wedit, cmd, f" (⚠ {len(diags)} issue{'s' if len(diags) > 1 else ''}: " + \
        ", ".join(sorted({d.code for d in diags if isinstance(d.code, str)})) + ")"


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _insert_below(lines: list[str], row: int, text: str) -> types.TextEdit:
    if row + 1 < len(lines):
        at = types.Position(row + 1, 0)
        return types.TextEdit(types.Range(at, at), text + "\n")
    at = types.Position(row, len(lines[row]))
    return types.TextEdit(types.Range(at, at), "\n" + text)


def register(server: HapaServer) -> None:
    """Register textDocument/codeAction, codeAction/resolve and the apply command for clients without resolve."""
    from hapa_lsp.features.common import open_document

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=True))
    async def code_action(ls: HapaServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        try:
            doc = open_document(ls, params.text_document.uri)
        except errors.HapaError:
            return None
        from hapa_lsp.features.common import language_of

        if ls.engine.applies_to(name_of(doc), language_of(doc)) is not None:
            return None
        only = params.context.only if params.context else None
        actions = list_actions(ls, doc, params.range, only)
        if not actions or _resolve_supported(ls):
            return actions or None
        trigger = params.context.trigger_kind if params.context else None
        out = []
        for a in actions:
            cmd = command_for(a.data or {})
            if cmd is not None:
                out.append(types.CodeAction(title=a.title, kind=a.kind, command=cmd))
            elif trigger == types.CodeActionTriggerKind.Automatic:
                # No resolve and no explicit request: never call the model for a light bulb; run on choice.
                out.append(types.CodeAction(title=a.title, kind=a.kind, is_preferred=a.is_preferred,
                                            command=types.Command(title=a.title, command=APPLY_COMMAND,
                                                                          arguments=[a.data])))
            else:
                try:
                    a.edit, a.command, note = await compute_edit(ls, a.data, stream=False)
                    a.title += note
                    a.data = None
                    out.append(a)
                except errors.HapaError as exc:
                    out.append(types.CodeAction(title=a.title, kind=a.kind, disabled=types.CodeActionDisabled(
                        reason=exc.message)))
        return out

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: HapaServer, action: types.CodeAction) -> types.CodeAction:
        if action.data is None or action.edit is not None:
            return action
        cmd = command_for(action.data) if isinstance(action.data, dict) else None
        if cmd is not None:
            action.command = cmd
            return action
        try:
            action.edit, cmd, note = await compute_edit(ls, action.data)
        except errors.HapaError as exc:
            if not getattr(exc, "recorded", False):
                ls.record_incident(exc, types.CODE_ACTION_RESOLVE)
            raise rpc_error(exc) from exc
        if cmd is not None:
            action.command = cmd
        action.title += note
        return action

    @server.command(APPLY_COMMAND)
    async def apply(ls: HapaServer, *args: Any) -> dict[str, Any]:
        from hapa_lsp.features import generate as g
        from hapa_lsp.features.commands import first_object

        g.link_request_cancel(ls)
        try:
            data = first_object(args, APPLY_COMMAND)
            edit, cmd, _ = await compute_edit(ls, data)
        except errors.HapaError as exc:
            if not getattr(exc, "recorded", False):
                ls.record_incident(exc, APPLY_COMMAND)
            raise rpc_error(exc) from exc
        applied = await g.apply_edit(ls, edit, "hapa: code action")
        if applied and cmd is not None and cmd.arguments:
            diags = [ls.protocol.from_json(d, types.Diagnostic) for d in cmd.arguments[0]["diagnostics"]]
            g.publish_issues(ls, data["uri"], diags)
        return {"applied": applied}
