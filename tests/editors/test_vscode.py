"""The VS Code extension: its settings are the server's settings, and it compiles, loads and packages."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from hapa_lsp import config

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "editors" / "vscode"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_vscode_settings", ROOT / "scripts" / "gen_vscode_settings.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _properties(package: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for group in package["contributes"]["configuration"]:
        out.update(group["properties"])
    return out


def test_package_json_settings_are_generated_from_the_server_schema():
    gen = _generator()
    current = (EXT / "package.json").read_text(encoding="utf-8")
    fresh = gen.render(json.loads(current))
    assert fresh == current, "editors/vscode/package.json drifted from hapa_lsp.config.schema(): " \
                             "run python scripts/gen_vscode_settings.py"


def test_every_server_setting_is_offered_with_its_type_default_and_doc():
    gen = _generator()
    props = _properties(json.loads((EXT / "package.json").read_text(encoding="utf-8")))
    rows = config.schema()
    assert len(rows) >= 40
    for row in rows:
        prop = props[gen.editor_key(row["key"])]
        assert prop["markdownDescription"].startswith(row["description"].strip())
        if row["type"] in ("string", "integer", "number", "boolean"):
            assert prop["type"] == row["type"], row["key"]
        if not gen._machine_dependent(row["default"]):
            assert prop["default"] == row["default"], row["key"]
        assert ("secret" in prop.get("tags", [])) == row["secret"], row["key"]
        if "enum" in row:
            assert prop["enum"] == row["enum"]
        assert (prop.get("scope") == "machine") == row["security"], row["key"]
    assert props["hapa.backend.endpoint"]["default"] == "http://127.0.0.1:11434"
    assert "secret" in props["hapa.backend.apiKey"]["tags"]
    assert "HAPA_BACKEND_API_KEY" in props["hapa.backend.apiKey"]["markdownDescription"]
    # The extension's own settings sit beside the server's, and no server setting was left out or invented.
    server_keys = {gen.editor_key(r["key"]) for r in rows}
    assert set(props) - server_keys == set(gen.CLIENT_SETTINGS)


def test_generator_check_mode_detects_drift(tmp_path):
    gen = _generator()
    stale = json.loads((EXT / "package.json").read_text(encoding="utf-8"))
    del stale["contributes"]["configuration"][0]["properties"]["hapa.backend.endpoint"]
    target = tmp_path / "package.json"
    target.write_text(json.dumps(stale, indent=2) + "\n", encoding="utf-8")
    assert gen.main(["--check", "--package-json", str(target)]) == 1
    assert gen.main(["--package-json", str(target)]) == 0
    assert gen.main(["--check", "--package-json", str(target)]) == 0
    assert "hapa.backend.endpoint" in _properties(json.loads(target.read_text(encoding="utf-8")))


# Loads the compiled extension with a stand-in `vscode` module (catches load-time errors tsc cannot see), then asks
# it what it would send the server for a user who set three settings: only those, never the extension's own.
_LOAD = """
const Module = require('module');
const resolve = Module._resolveFilename;
const h = { get: (t, p) => (p in t ? t[p] : (t[p] = new Proxy(function () {}, h))),
            construct: () => new Proxy({}, h), apply: () => new Proxy(function () {}, h) };
const user = { 'hapa.backend.endpoint': { globalValue: 'http://10.0.0.5:8000' },
               'hapa.completion.maxLines': { globalValue: 4, workspaceValue: 6 },
               'hapa.sidecar.apiKey': { workspaceValue: '' },
               'hapa.sidecar.host': { globalValue: '127.0.0.1', workspaceFolderValue: '0.0.0.0' },
               'hapa.client.serverPath': { globalValue: '/opt/hapa/bin/hapa-lsp' },
               'hapa.trace.server': { globalValue: 'verbose' } };
const vscode = new Proxy({ workspace: { getConfiguration: () => ({ inspect: (k) => user[k] || { defaultValue: 1 } }) } }, h);
Module._resolveFilename = function (r, ...a) { return r === 'vscode' ? 'vscode' : resolve.call(this, r, ...a); };
require.cache['vscode'] = { id: 'vscode', filename: 'vscode', loaded: true, exports: vscode };
const ext = require(process.argv[1]);
const pkg = require(process.argv[2]);
console.log(JSON.stringify({ exports: [typeof ext.activate, typeof ext.deactivate], sent: ext.userSettings(pkg) }));
"""


def test_extension_installs_compiles_loads_and_packages(tmp_path):
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node are not installed: the VS Code extension cannot be built here")
    work = tmp_path / "vscode"
    shutil.copytree(EXT, work, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    env = {**os.environ, "npm_config_fund": "false", "npm_config_audit": "false", "npm_config_update_notifier": "false"}

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    run(npm, "ci")
    run(npm, "run", "compile")
    loaded = json.loads(run(node, "-e", _LOAD, str(work / "out" / "extension.js"), str(work / "package.json")))
    assert loaded == {"exports": ["function", "function"],
                      "sent": {"backend": {"endpoint": "http://10.0.0.5:8000"}, "completion": {"maxLines": 6},
                               "sidecar": {"host": "127.0.0.1"}}}  # security settings: the user's value only
    vsix = tmp_path / "hapa-lsp.vsix"
    run(npm, "exec", "--", "vsce", "package", "--allow-missing-repository", "--out", str(vsix))
    with zipfile.ZipFile(vsix) as z:
        names = set(z.namelist())
        assert "extension/out/extension.js" in names
        assert "extension/node_modules/vscode-languageclient/package.json" in names
        assert not any(n.startswith("extension/src/") for n in names)
        packaged = json.loads(z.read("extension/package.json"))
    assert packaged["main"] == "./out/extension.js"
    assert packaged["contributes"]["configuration"] == \
        json.loads((EXT / "package.json").read_text(encoding="utf-8"))["contributes"]["configuration"]
    commands = {c["command"] for c in packaged["contributes"]["commands"]}
    assert {"hapa.ui.generateCode", "hapa.ui.history", "hapa.ui.feedback", "hapa.ui.clearCache",
            "hapa.ui.openDashboard"} <= commands


def test_every_palette_command_is_registered_by_the_extension():
    import re

    package = json.loads((EXT / "package.json").read_text(encoding="utf-8"))
    contributed = {c["command"] for c in package["contributes"]["commands"]}
    source = (EXT / "src" / "extension.ts").read_text(encoding="utf-8")
    registered = set(re.findall(r"registerCommand\('([\w.]+)'", source))
    assert contributed == registered
    # Server commands keep their own names (vscode-languageclient registers those); palette ones never clash.
    assert not any(c.startswith(("hapa.generateCode", "hapa.history", "hapa.cache", "hapa.feedback"))
                   for c in contributed)
    for key in package["contributes"].get("keybindings", []):
        assert key["command"] in contributed
