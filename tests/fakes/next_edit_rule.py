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


def _add_argument(region: str, name: str, n_old: int, param: str, method: bool,
                  above: str = "", below: str = "") -> str:
    """Calls of ``name`` with the old number of arguments get ``param`` added; calls in comments and docstrings
    (doctests) keep what they show. ``above`` and ``below`` are the excerpt around the region: whether a line is in
    a docstring is read from all of it."""
    call = re.compile(rf"(\b{re.escape(name)})\(([^()]*)\)")

    def fix_line(code: str) -> str:
        def fix(m: re.Match[str]) -> str:
            before = code[:m.start()]
            if re.search(r"\bdef\s+$", before):
                return m.group(0)
            if before.endswith(".") and not method:
                return m.group(0)  # another object's function of the same name
            inner = m.group(2)
            if len(_args(inner)) != n_old:
                return m.group(0)
            sep = ", " if inner.strip() else ""
            return f"{m.group(1)}({inner}{sep}{param})"

        return call.sub(fix, code)

    lines = region.splitlines(keepends=True)
    masked = _code_lines(above + region + below)[len(above.splitlines(keepends=True)):][:len(lines)]
    out = []
    for ln, code in zip(lines, masked):
        if code == ln:
            out.append(fix_line(ln))
        elif _CALL_CHARS.sub("", code).strip() == "" or ln.lstrip().startswith(">>>"):
            out.append(ln)  # prose: a comment, a docstring, a doctest
        else:
            # Code with a comment or string on the same line: fix the code part (before any `#`).
            k = code.find("#") if "#" in ln else -1
            head, tail = (ln[:k], ln[k:]) if k >= 0 else (ln, "")
            out.append(fix_line(head) + tail)
    return "".join(out)


_CALL_CHARS = re.compile(r"[\s]")


def _code_lines(region: str) -> list[str]:
    """The region's lines with strings and comments blanked, read by Python's tokenizer; a region that starts
    inside a docstring (its first triple quote closes one) is read as such."""
    lines = region.splitlines(keepends=True)
    for opened in ("", '"""', "'''"):
        blank = _blank_strings(opened + region)
        if blank is not None:
            blank = blank[len(opened):]
            out, pos = [], 0
            for ln in lines:
                out.append(blank[pos:pos + len(ln)])
                pos += len(ln)
            return out
    return lines


def _blank_strings(text: str) -> str | None:
    """``text`` with string and comment tokens replaced by spaces, or None when a string runs to the end."""
    import io
    import tokenize

    starts = [0]
    for ln in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(ln))
    chars = list(text)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.STRING, tokenize.COMMENT):
                a = starts[tok.start[0] - 1] + tok.start[1]
                b = starts[tok.end[0] - 1] + tok.end[1]
                for k in range(a, b):
                    if chars[k] not in "\r\n":
                        chars[k] = " "
    except tokenize.TokenError as exc:
        if "string" in str(exc):
            return None
    except (SyntaxError, IndentationError):
        pass
    return "".join(chars)


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
        # The excerpt around the region (the generic prompt's fenced block; other formats: the region alone).
        fence_open = text.rfind("```", 0, i)
        fence_close = text.find("```", j)
        above = text[text.find("\n", fence_open) + 1:i] if fence_open >= 0 else ""
        below = text[j + len(END):fence_close].lstrip("\n") if fence_close >= 0 else ""
        new = _add_argument(region, *param, above=above, below=below)
    else:
        pair = _rename(removed, added)
        if pair is not None:
            new = _rename_in_scope(region, added, *pair)
    return f"{START}\n{new}{END}"
