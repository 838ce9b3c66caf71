"""Checks on generated code before it is offered: does it parse, and does it do something dangerous."""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Names that, bound to a non-empty string literal, look like a hard-coded credential.
_SECRET_NAME = re.compile(r"(?i)(passw(or)?d|passwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|"
                          r"private[_-]?key|client[_-]?secret|^token$|_token$)")
# Literal shapes of well-known credentials, whatever they are assigned to.
_SECRET_LITERAL = re.compile(r"^(sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
                             r"xox[baprs]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)")
_PLACEHOLDER = re.compile(r"(?i)^(|x+|\*+|<.*>|\{.*\}|changeme|your[_ -].*|example.*|dummy|test|none|null)$")

_PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve"}
_SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


@dataclass(frozen=True, slots=True)
class Issue:
    """One dangerous construct: a rule id, why it matters, and where (0-based lines, code-point columns)."""

    rule: str
    message: str
    line: int
    column: int
    end_line: int
    end_column: int
    severity: str = "warning"


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    """Why the code does not parse (0-based line and column)."""

    message: str
    line: int
    column: int

    def describe(self) -> str:
        """The problem as one line, for the user and for the repair prompt."""
        return f"SyntaxError at line {self.line + 1}, column {self.column + 1}: {self.message}"


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of validating one snippet."""

    language: str
    checked: bool  # False when the language has no syntax check (only the secret scan ran)
    syntax_error: SyntaxProblem | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def parses(self) -> bool:
        """True unless a syntax check ran and failed."""
        return self.syntax_error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form returned by commands."""
        return {"language": self.language, "syntax_checked": self.checked, "valid": self.parses,
                "syntax_error": asdict(self.syntax_error) if self.syntax_error else None,
                "issues": [asdict(i) for i in self.issues]}


def validate(code: str, language: str = "python") -> Report:
    """Parse ``code`` (Python) and flag dangerous constructs; other languages get the secret scan only."""
    if language != "python":
        return Report(language, False, None, _scan_secret_literals(code))
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        line = max(0, (exc.lineno or 1) - 1)
        col = max(0, (exc.offset or 1) - 1)
        return Report(language, True, SyntaxProblem(exc.msg or "invalid syntax", line, col))
    except ValueError as exc:  # e.g. null bytes in the source
        return Report(language, True, SyntaxProblem(str(exc), 0, 0))
    finder = _Finder()
    finder.visit(tree)
    issues = sorted(finder.issues, key=lambda i: (i.line, i.column, i.rule))
    return Report(language, True, None, issues)


def _dotted(node: ast.AST) -> str:
    """``os.system`` for Attribute(Name(os), system); '' when not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_constant_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.aliases: dict[str, str] = {}  # local name -> module or module.function it was imported as

    def _add(self, rule: str, message: str, node: ast.AST, severity: str = "warning") -> None:
        line = getattr(node, "lineno", 1) - 1
        col = getattr(node, "col_offset", 0)
        end_line = (getattr(node, "end_lineno", None) or line + 1) - 1
        end_col = getattr(node, "end_col_offset", None) or col
        self.issues.append(Issue(rule, message, line, col, end_line, end_col, severity))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for a in node.names:
            if node.module:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def _resolve(self, name: str) -> str:
        head, _, rest = name.partition(".")
        full = self.aliases.get(head, head)
        return f"{full}.{rest}" if rest else full

    def visit_Call(self, node: ast.Call) -> None:
        name = self._resolve(_dotted(node.func))
        base = name.rsplit(".", 1)[-1]
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            if not (node.args and _is_constant_str(node.args[0])):
                self._add("dynamic-eval", f"{base}() runs code built at run time; with user input this lets "
                          "anyone run arbitrary code (use ast.literal_eval or explicit parsing)", node, "error")
        elif name in ("os.system", "os.popen") or name.startswith("os.exec") or name.startswith("os.spawn"):
            self._add("os-command", f"{name}() runs a shell command; prefer subprocess.run([...]) with a list "
                      "of arguments", node, "error")
        elif name.split(".")[0] == "subprocess" and base in _SUBPROCESS_CALLS:
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                    self._add("shell-true", f"{name}(..., shell=True) passes the command through the shell; "
                              "pass a list of arguments instead", node, "error")
            if base in ("getoutput", "getstatusoutput"):
                self._add("shell-true", f"{name}() always runs through the shell", node, "error")
        elif name.split(".")[0] in _PICKLE_MODULES and base in ("loads", "load", "Unpickler", "open"):
            self._add("unsafe-deserialization", f"{name}() can run arbitrary code when the data is untrusted; "
                      "use json or a schema-checked format", node, "error")
        elif name in ("yaml.load", "yaml.load_all") and not any(kw.arg == "Loader" for kw in node.keywords) \
                and len(node.args) < 2:
            self._add("unsafe-deserialization", "yaml.load() without a safe Loader can build arbitrary "
                      "objects; use yaml.safe_load", node, "error")
        self.generic_visit(node)

    def _check_secret(self, target: ast.AST, value: ast.AST | None, node: ast.AST) -> None:
        if value is None or not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            return
        text = value.value
        name = target.id if isinstance(target, ast.Name) else (
            target.attr if isinstance(target, ast.Attribute) else (
                target.value if isinstance(target, ast.Constant) and isinstance(target.value, str) else ""))
        if _SECRET_LITERAL.match(text) or (name and _SECRET_NAME.search(name) and len(text) >= 6
                                           and not _PLACEHOLDER.match(text)):
            self._add("hardcoded-secret", f"'{name or 'a string'}' holds what looks like a hard-coded secret; "
                      "read it from the environment or a secret store", node, "error")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_secret(t, node.value, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_secret(node.target, node.value, node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg:
            self._check_secret(ast.Name(id=node.arg), node.value, node.value)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for k, v in zip(node.keys, node.values):
            if k is not None:
                self._check_secret(k, v, v)
        self.generic_visit(node)


def _scan_secret_literals(code: str) -> list[Issue]:
    """For languages we cannot parse: flag well-known credential shapes inside quotes."""
    out: list[Issue] = []
    for i, line in enumerate(code.split("\n")):
        for m in re.finditer(r"[\"']([^\"'\n]{12,})[\"']", line):
            if _SECRET_LITERAL.match(m.group(1)):
                out.append(Issue("hardcoded-secret", "this string looks like a hard-coded secret; read it from "
                                 "the environment or a secret store", i, m.start(), i, m.end(), "error"))
    return out
