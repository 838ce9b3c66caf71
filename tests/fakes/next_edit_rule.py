"""The fake model's next-edit rule: it reads the last edit in the prompt's history and makes the same change in the
editable region it was given, the way a next-edit model is meant to.

- a rename (``count`` -> ``total`` on a changed line) is applied to every whole-word use in the region;
- a parameter added to a ``def`` (``def f(a)`` -> ``def f(a, b)``) is added as an argument to calls of ``f`` in the
  region that have the old number of arguments.

It answers in the generic format's shape (``<|editable_region_start|>`` ... ``<|editable_region_end|>``), which every
prompt format's parser also reads from an echo; with no history or no such change, it echoes the region unchanged.
Use it with ``fake.script(next_edit_answer)``.
"""

from __future__ import annotations

import re
from typing import Any

START, END, CURSOR = "<|editable_region_start|>", "<|editable_region_end|>", "<|user_cursor_is_here|>"
_IDENT = re.compile(r"[A-Za-z_]\w*")
_DEF = re.compile(r"\bdef\s+([A-Za-z_]\w*)\s*\(([^)]*)\)")


def _prompt_text(record: Any) -> str:
    msgs = record.messages
    if msgs:
        return "\n".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
    return record.prompt or ""


def _last_diff(text: str, region_at: int) -> list[str]:
    """The +/- lines of the last history block before the excerpt."""
    history = text[:region_at]
    blocks = re.split(r"```diff\n|User edited ", history)
    last = blocks[-1] if len(blocks) > 1 else ""
    return [ln for ln in last.splitlines() if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]


def _rename(removed: list[str], added: list[str]) -> tuple[str, str] | None:
    for old, new in zip(removed, added):
        a, b = _IDENT.findall(old), _IDENT.findall(new)
        if len(a) != len(b):
            continue
        pairs = {(x, y) for x, y in zip(a, b) if x != y}
        if len(pairs) == 1:
            return next(iter(pairs))
    return None


def _args(params: str) -> list[str]:
    return [p.strip() for p in params.split(",") if p.strip()]


def _added_param(removed: list[str], added: list[str]) -> tuple[str, int, str, bool] | None:
    olds = {m.group(1): _args(m.group(2)) for ln in removed for m in _DEF.finditer(ln)}
    for ln in added:
        for m in _DEF.finditer(ln):
            name, new = m.group(1), _args(m.group(2))
            old = olds.get(name)
            if old is not None and len(new) == len(old) + 1 and new[:len(old)] == old:
                param = re.split(r"[:=]", new[-1])[0].strip()
                method = ln[:1].isspace()  # an indented def: called as obj.name(...)
                return name, len([p for p in old if p not in ("self", "cls")]), param, method
    return None


def _add_argument(region: str, name: str, n_old: int, param: str, method: bool) -> str:
    def fix(m: re.Match[str]) -> str:
        before = region[:m.start()]
        if re.search(r"\bdef\s+$", before.rsplit("\n", 1)[-1]):
            return m.group(0)
        if before.endswith(".") and not method:
            return m.group(0)  # another object's function of the same name
        inner = m.group(2)
        if len(_args(inner)) != n_old or "(" in inner:
            return m.group(0)
        sep = ", " if inner.strip() else ""
        return f"{m.group(1)}({inner}{sep}{param})"

    return re.sub(rf"(\b{re.escape(name)})\(([^()]*)\)", fix, region)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _rename_in_scope(region: str, added: list[str], old: str, new: str) -> str:
    """Rename ``old`` after the changed line, within its scope: a renamed parameter in its function's body, a
    renamed local up to the end of its function (the next ``def``/``class``/decorator less indented, or code at
    column 0). A region that does not show the changed line is renamed throughout."""
    lines = region.splitlines(keepends=True)
    changed = next((i for i, ln in enumerate(lines) for a in added if ln.rstrip("\r\n") == a.rstrip("\r\n")), None)
    if changed is None:
        return re.sub(rf"\b{re.escape(old)}\b", new, region)
    head = lines[changed]
    is_def = bool(_DEF.search(head)) or head.lstrip().startswith(("def ", "async def "))
    depth = _indent(head)
    out = lines[:changed + 1]
    for ln in lines[changed + 1:]:
        if ln.strip():
            ind = _indent(ln)
            stripped = ln.lstrip()
            ends = (ind <= depth) if is_def else (ind == 0 or (ind < depth and stripped.startswith(
                ("def ", "async def ", "class ", "@"))))
            if ends:
                out.append(ln)
                out.extend(lines[len(out):])
                break
        out.append(re.sub(rf"\b{re.escape(old)}\b", new, ln))
    return "".join(out)


def next_edit_answer(record: Any) -> str | None:
    """The region rewritten by the rule, in the generic answer shape (None: not a next-edit prompt)."""
    text = _prompt_text(record)
    i = text.rfind(START + "\n")  # the excerpt's marker (an instruction may name the markers too)
    j = text.find(END, i)
    if i < 0 or j < 0:
        return None
    region = text[i + len(START) + 1:j].replace(CURSOR, "")
    lines = _last_diff(text, i)
    removed = [ln[1:] for ln in lines if ln.startswith("-")]
    added = [ln[1:] for ln in lines if ln.startswith("+")]
    new = region
    param = _added_param(removed, added)
    if param is not None:
        new = _add_argument(region, *param)
    else:
        pair = _rename(removed, added)
        if pair is not None:
            new = _rename_in_scope(region, added, *pair)
    return f"{START}\n{new}{END}"
