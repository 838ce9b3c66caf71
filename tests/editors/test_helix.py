"""editors/helix/languages.toml: valid TOML that runs hapa-lsp beside a Python server with valid settings."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from hapa_lsp import config

ROOT = Path(__file__).resolve().parents[2]


def _load() -> dict:
    return tomllib.loads((ROOT / "editors" / "helix" / "languages.toml").read_text(encoding="utf-8"))


def test_helix_config_runs_hapa_lsp_next_to_a_python_server():
    doc = _load()
    servers = doc["language-server"]
    assert servers["hapa-lsp"]["command"] == "hapa-lsp"
    python = next(lang for lang in doc["language"] if lang["name"] == "python")
    names = python["language-servers"]
    assert "hapa-lsp" in names and len(names) >= 2
    other = next(n for n in names if n != "hapa-lsp")
    assert servers[other]["command"] in ("pylsp", "jedi-language-server", "pyright-langserver", "ruff")
    # The command is the console script this package installs.
    assert shutil.which("hapa-lsp") is not None


def test_helix_settings_are_accepted_by_the_server_as_they_are():
    passed = _load()["language-server"]["hapa-lsp"]["config"]
    # Helix sends `config` as initializationOptions and answers workspace/configuration from it.
    settings, problems = config.load(environ={}, init_options=passed, workspace=passed)
    assert problems == []
    assert settings.backend.endpoint == passed["hapa"]["backend"]["endpoint"]
    assert settings.backend.completion_model == passed["hapa"]["backend"]["completionModel"]
    assert settings.completion.in_completion_list is True
