"""The error catalog: 22 unique codes, fixed meanings kept, every code with a remedy; incident ids."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from hapa_lsp import config, errors

ROOT = Path(__file__).resolve().parents[2]
# hapa.<section> or hapa.<section>.<field>, and "hapa.backend.completionModel / chatModel" (same section).
_SETTING = re.compile(r"\bhapa\.([A-Za-z_]+)(?:\.([A-Za-z_]+)((?:\s*/\s*[A-Za-z_]+)*))?")
_ENV = re.compile(r"\bHAPA_[A-Z0-9_]+\b")


def test_catalog_has_22_unique_codes_each_with_a_remedy():
    assert len(errors.CATALOG) == 22
    codes = list(errors.CATALOG)
    assert len(set(codes)) == 22
    assert sum(c.startswith("E4") for c in codes) + sum(c.startswith("E5") for c in codes) == 22
    for code, spec in errors.CATALOG.items():
        assert re.fullmatch(r"E[45]\d{3}", code)
        assert spec.title and len(spec.remedy) > 20, code
        assert spec.category == ("client" if code.startswith("E4") else "server")


def test_the_original_backend_codes_keep_their_meaning():
    fixed = {"E4001": "Invalid input format", "E4002": "Missing required field", "E4003": "Invalid API key",
             "E4004": "Rate limit exceeded", "E4005": "Permission denied", "E5001": "AI model timeout",
             "E5002": "Cache service error", "E5003": "Database connection error", "E5004": "Internal server error"}
    for code, title in fixed.items():
        assert errors.CATALOG[code].title == title
    assert errors.CATALOG["E5001"].retryable
    assert not errors.CATALOG["E4001"].retryable


def test_incident_id_format_and_error_data():
    err = errors.UpstreamRateLimited("slow down", retry_after=2.5)
    assert re.fullmatch(r"INC-\d{8}-[0-9A-F]{8}", err.incident_id)
    data = err.to_data()
    assert data["code"] == "E5007" and data["retry_after"] == 2.5 and data["incident_id"] == err.incident_id
    assert err.code in err.message and err.incident_id in err.message and err.spec.remedy in err.message
    assert errors.new_incident_id() != errors.new_incident_id()


def test_foreign_exceptions_become_e5004_without_their_text():
    err = errors.as_hapa_error(KeyError("sk-secret-value"))
    assert err.code == "E5004" and "sk-secret" not in err.message


def test_readme_lists_every_code():
    readme = (ROOT / "README.md").read_text()
    for code, spec in errors.CATALOG.items():
        assert f"| {code} | {spec.title} |" in readme, code


def _generator():
    """scripts/gen_vscode_settings.py: how the settings are named where users set them."""
    spec = importlib.util.spec_from_file_location("gen_vscode_settings", ROOT / "scripts" / "gen_vscode_settings.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _readme_error_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("\n## Errors\n"):]
    table = table[:table.index("\n## ", 1)]
    row = re.compile(r"^\| (E[45]\d{3}) \| [^|]+ \| (?:yes|no) \| (.+) \|$", re.M)
    return {m.group(1): m.group(2) for m in row.finditer(table)}


def _named_settings(text: str) -> list[str]:
    names = []
    for m in _SETTING.finditer(text):
        section, field, more = m.groups()
        names.append(f"hapa.{section}" if field is None else f"hapa.{section}.{field}")
        names += [f"hapa.{section}.{alt.strip()}" for alt in (more or "").split("/") if alt.strip()]
    return names


def test_every_setting_an_error_names_exists():
    gen = _generator()
    rows = config.schema()
    keys = {gen.editor_key(r["key"]) for r in rows}
    sections = {k.rsplit(".", 1)[0] for k in keys}
    env = {gen._env_name(r["key"]) for r in rows}
    # Every string in errors.py (catalog titles and remedies, and the messages its classes build)...
    source = (ROOT / "hapa_lsp" / "errors.py").read_text(encoding="utf-8")
    texts = {f"errors.py: {node.value[:60]!r}": node.value for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    # ...the remedies as users read them, joined from their pieces, and the README's Errors table.
    texts.update({f"{code} remedy": spec.remedy for code, spec in errors.CATALOG.items()})
    texts.update({f"README {code}": remedy for code, remedy in _readme_error_rows().items()})
    named = [(where, name) for where, text in texts.items() for name in _named_settings(text)]
    unknown = [(where, name) for where, name in named if name not in keys and name not in sections]
    assert not unknown, f"settings that do not exist: {unknown}"
    # The pattern finds what is there: a field, a section, and the "a / b" shorthand.
    assert {("E4007 remedy", "hapa.context.excludeGlobs"), ("E4004 remedy", "hapa.rateLimits"),
            ("E5010 remedy", "hapa.backend.chatModel")} <= set(named)
    bad_env = [(where, var) for where, text in texts.items() for var in _ENV.findall(text) if var not in env]
    assert not bad_env, f"environment variables that are no setting: {bad_env}"


def test_readme_errors_table_says_what_the_catalog_says():
    rows = _readme_error_rows()
    assert set(rows) == set(errors.CATALOG)
    for code, spec in errors.CATALOG.items():
        assert rows[code] == spec.remedy, code


def test_every_code_has_its_own_class_and_the_code_is_the_classs():
    """Handlers tell failures apart by class; a code cannot be passed as a string any more."""
    for code in errors.CATALOG:
        cls = errors.error_class(code)
        assert cls.code == code and cls(f"about {code}").code == code
        assert issubclass(cls, errors.InputError) == code.startswith("E4"), code
    assert errors.error_class("E4006") is errors.DocumentNotOpen
    assert errors.error_class("E5009") is errors.UpstreamServerError  # the leaf, not the family root
    assert errors.error_class("E4001") is errors.InvalidInput
    try:
        errors.InvalidInput("x", code="E5004")  # type: ignore[call-arg]
    except TypeError:
        pass
    else:
        raise AssertionError("a code keyword was accepted")


def test_context_is_typed_fields_set_at_construction():
    err = errors.ModelTimeout("slow", model="m1", fast=True, retry_after=1.0)
    assert (err.model, err.fast, err.recorded, err.request_id) == ("m1", True, False, None)
    assert errors.as_hapa_error(KeyError("k")).__class__ is errors.InternalError


def test_no_module_passes_a_code_to_an_error():
    """The catalog classes are the only place a code is chosen (outside data such as ConfigProblem)."""
    for path in (ROOT / "hapa_lsp").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and any(k.arg == "code" for k in node.keywords):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                is_ours = isinstance(getattr(errors, name, None), type) and issubclass(getattr(errors, name),
                                                                                       errors.HapaError)
                assert not is_ours, f"{path.name}:{node.lineno} passes code= to {name}"
