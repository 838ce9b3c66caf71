"""Generate the VS Code extension's settings (contributes.configuration) from hapa_lsp.config.schema().

Run ``python scripts/gen_vscode_settings.py`` after adding or changing a server setting; ``--check`` exits 1
when editors/vscode/package.json is out of date (tests/editors/test_vscode.py does the same comparison).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_JSON = ROOT / "editors" / "vscode" / "package.json"

# Settings of the extension itself (not sent to the server); the extension strips `hapa.client` and `hapa.trace`
# from what it answers to workspace/configuration.
CLIENT_SECTION = "client"
CLIENT_SETTINGS: dict[str, dict[str, Any]] = {
    "hapa.client.serverPath": {
        "type": "string", "default": "hapa-lsp",
        "description": "The hapa-lsp executable: a name found on PATH or an absolute path (e.g. a virtualenv's "
                       "bin/hapa-lsp).",
    },
    "hapa.client.serverArgs": {
        "type": "array", "items": {"type": "string"}, "default": [],
        "description": "Extra command-line arguments for hapa-lsp.",
    },
    "hapa.client.dashboardUrl": {
        "type": "string", "default": "",
        "description": "URL opened by 'hapa: Open dashboard' when the server's hapa.health answer names none.",
    },
    "hapa.trace.server": {
        "type": "string", "enum": ["off", "messages", "verbose"], "default": "off",
        "description": "Trace the LSP messages between VS Code and hapa-lsp in the 'hapa' output channel.",
    },
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def editor_key(key: str) -> str:
    """hapa.rate_limits.windowMinutes -> hapa.rateLimits.windowMinutes: camelCase throughout, as editors spell it
    (the server accepts both spellings of a section)."""
    prefix, section, field = key.split(".", 2)
    return f"{prefix}.{_camel(section)}.{field}"


def _env_name(key: str) -> str:
    """hapa.backend.apiKey -> HAPA_BACKEND_API_KEY (the server's environment variable for the setting)."""
    _, section, field = key.split(".", 2)
    return f"HAPA_{_snake(section).upper()}_{_snake(field).upper()}"


_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _field_type(key: str) -> Any:
    """The attrs field type behind a schema row (None when it cannot be found)."""
    import attrs

    from hapa_lsp import config

    _, section, field = key.split(".", 2)
    for sec in attrs.fields(config.Settings):
        if _camel(sec.name) == _camel(section):
            for f in attrs.fields(sec.type):
                if _camel(f.name) == field:
                    return f.type
    return None


def _item_schema(tp: Any) -> dict[str, Any]:
    import typing

    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    return {"type": "object"} if typing.get_origin(tp) is dict or tp is dict or isinstance(tp, type) else {}


def _json_type(row: dict[str, Any]) -> dict[str, Any]:
    import typing

    default = row["default"]
    kind = row["type"]
    tp = _field_type(row["key"])
    origin = typing.get_origin(tp)
    if origin is dict or isinstance(default, dict) or kind == "object":
        return {"type": "object"}
    if kind == "array" or origin is list or isinstance(default, list):
        args = typing.get_args(tp)
        items = _item_schema(args[0]) if args else {"type": "string"}
        return {"type": "array", "items": items} if items else {"type": "array"}
    return {"type": kind}


def _machine_dependent(value: Any) -> bool:
    """Defaults computed from this machine (paths under the home directory) must not be baked into package.json."""
    return isinstance(value, str) and bool(value) and str(Path.home()) in value and str(Path.home()) != "/"


def property_for(row: dict[str, Any], order: int) -> dict[str, Any]:
    """One schema row as a VS Code configuration property."""
    prop = _json_type(row)
    prop["default"] = row["default"]
    description = row["description"].strip()
    if _machine_dependent(row["default"]):
        prop["default"] = ""
        description += " Empty: the server's default, which depends on the machine."
    if row.get("secret"):
        description += (" Secret: prefer the command 'hapa: Set API key' (kept in VS Code's secret storage) or the "
                        f"environment variable {_env_name(row['key'])} over writing it into settings.json.")
    else:
        description += f" Environment variable: {_env_name(row['key'])}."
    if row.get("security"):
        # A repository's .vscode/settings.json must not open the sidecar: user (or remote machine) settings only,
        # and the extension sends no workspace value for these (the server ignores them from the workspace too).
        description += " Security setting: read from user settings only, never from a workspace's settings."
        prop["scope"] = "machine"
    prop["markdownDescription"] = description
    if "enum" in row:
        prop["enum"] = list(row["enum"])
    if row.get("secret"):
        prop["tags"] = ["secret"]
    prop["order"] = order
    return prop


def build_configuration() -> list[dict[str, Any]]:
    """The contributes.configuration array: one titled group per settings section, then the client's own."""
    from hapa_lsp import config

    groups: dict[str, dict[str, Any]] = {}
    for order, row in enumerate(config.schema()):
        section = row["key"].split(".")[1]
        if section in (CLIENT_SECTION, "trace"):
            raise SystemExit(f"server setting {row['key']} collides with the extension's own hapa.{section}.*")
        group = groups.setdefault(section, {"title": f"hapa: {section.replace('_', ' ')}", "properties": {}})
        group["properties"][editor_key(row["key"])] = property_for(row, order)
    client = {"title": "hapa: editor client", "properties": {}}
    for order, (key, prop) in enumerate(CLIENT_SETTINGS.items(), start=10_000):
        client["properties"][key] = {**prop, "order": order}
    return [*groups.values(), client]


def render(package: dict[str, Any]) -> str:
    """package.json text with a freshly generated contributes.configuration (the rest kept as is)."""
    package.setdefault("contributes", {})["configuration"] = build_configuration()
    return json.dumps(package, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite editors/vscode/package.json, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if package.json is out of date")
    parser.add_argument("--package-json", type=Path, default=PACKAGE_JSON)
    args = parser.parse_args(argv)
    current = args.package_json.read_text(encoding="utf-8")
    fresh = render(json.loads(current))
    if args.check:
        if fresh != current:
            print(f"{args.package_json} is out of date: run python scripts/gen_vscode_settings.py", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        args.package_json.write_text(fresh, encoding="utf-8")
        print(f"updated {args.package_json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
