"""The error catalog: 22 unique codes, fixed meanings kept, every code with a remedy; incident ids."""

from __future__ import annotations

import re

from hapa_lsp import errors


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
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code, spec in errors.CATALOG.items():
        assert f"| {code} | {spec.title} |" in readme, code
