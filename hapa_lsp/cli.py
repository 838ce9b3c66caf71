"""Command line: `hapa-lsp` serves LSP (stdio by default, --tcp / --ws on loopback); `hapa-lsp doctor` checks setup."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from typing import Any

from hapa_lsp import __version__, errors, log
from hapa_lsp.log import public_url


def _hostport(value: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or PORT; the host defaults to loopback."""
    host, _, port = value.rpartition(":")
    try:
        return (host.strip("[]") or "127.0.0.1"), int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or PORT, got {value!r}") from None


_LAZY_SUBCOMMANDS = ("context", "generate")


def build_parser(full: bool = True) -> argparse.ArgumentParser:
    """The argument parser (also used by tests and the README).

    ``full=False`` leaves out the subcommands whose modules are slow to import; the server's own
    start (no subcommand) uses it, because editors wait for that process to answer initialize.
    """
    p = argparse.ArgumentParser(prog="hapa-lsp", description="AI coding assistant as a Language Server.")
    p.add_argument("--version", action="version", version=f"hapa-lsp {__version__}")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--stdio", action="store_true", help="speak LSP over stdin/stdout (the default)")
    t.add_argument("--tcp", type=_hostport, metavar="HOST:PORT", help="listen for one LSP client over TCP")
    t.add_argument("--ws", type=_hostport, metavar="HOST:PORT", help="listen for an LSP client over WebSocket")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: LOG_LEVEL or INFO)")
    p.add_argument("--log-file", default=None, help="log to this rotating file instead of stderr")
    p.add_argument("--log-format", choices=("console", "json"), default=None, help="log line format")
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser("doctor", help="print the effective configuration and probe the model server")
    d.add_argument("--settings", default=None, help="a JSON file with settings as an editor would send them")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    if full:
        # deferred: these modules import the config, context and generation stacks (tests/unit/test_startup.py)
        from hapa_lsp.cli_context import add_parser as add_context_parser

        add_context_parser(sub)
        from hapa_lsp.cli_generate import add_parser as add_generate_parser

        add_generate_parser(sub)
    return p


def _configure_logging(args: argparse.Namespace) -> None:
    """Logging from the flags and the environment only: the settings tree is loaded after the
    initialize response, and logging is reconfigured then if the settings say otherwise."""
    env = os.environ
    level = args.log_level or env.get("HAPA_LOGGING_LEVEL") or env.get("LOG_LEVEL") or "INFO"
    file = args.log_file if args.log_file is not None else env.get("HAPA_LOGGING_FILE", "")
    fmt = args.log_format or env.get("HAPA_LOGGING_FORMAT") or "console"
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        level = "INFO"  # the settings tree reports the bad value (E4009) once the editor is connected
    log.configure(level, file, fmt if fmt in ("console", "json") else "console")
    log.set_cli_overrides(level=args.log_level, file=args.log_file, fmt=args.log_format)


#: Objects allocated (net) between two of the cyclic collector's young collections while the server is imported.
IMPORT_GC_THRESHOLD = 5000


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hapa-lsp` console script."""
    words = sys.argv[1:] if argv is None else argv
    full = any(w in _LAZY_SUBCOMMANDS or w in ("-h", "--help") for w in words)
    args = build_parser(full).parse_args(argv)
    if args.command == "doctor":
        return doctor(args)
    if args.command == "generate":
        # deferred: only this subcommand needs it (tests/unit/test_startup.py)
        from hapa_lsp.cli_generate import cli_run as generate_cli

        return generate_cli(args)
    if args.command == "context":
        # deferred: only this subcommand needs it (tests/unit/test_startup.py)
        from hapa_lsp.cli_context import run as context_report

        return context_report(args)
    # The jedi worker starts now, on the other core, while this process imports pygls (~0.6 s).
    # deferred: the subcommands above never start a worker
    from hapa_lsp import jedi_spawn

    jedi_spawn.start_early()
    _configure_logging(args)
    # Helper threads (warm-up imports after initialize, SQLite writes) hold the GIL for up to the switch
    # interval while the event loop waits to answer a keystroke: 1 ms instead of CPython's 5 ms.
    sys.setswitchinterval(0.001)
    # Importing pygls, lsprotocol and the features makes ~55,000 objects that live as long as the process. On
    # CPython's default thresholds the cyclic collector walks them again and again meanwhile (~10% of the import's
    # CPU time); with fewer, larger collections it frees the import's own garbage cycles all the same (switching
    # it off left ~10 MB of them for good). Then they are left out of every later collection.
    thresholds = gc.get_threshold()
    gc.set_threshold(IMPORT_GC_THRESHOLD, *thresholds[1:])
    try:
        # deferred: the subcommands never load the server and its features
        from hapa_lsp.server import create_server

        server = create_server()
    finally:
        gc.set_threshold(*thresholds)
        gc.freeze()
    if args.tcp:
        server.start_tcp(*args.tcp)
    elif args.ws:
        server.start_ws(*args.ws)
    else:
        server.start_io()
    return 0


def doctor(args: argparse.Namespace) -> int:
    """Print the effective configuration (secrets masked), probe the model server, one line per problem."""
    # deferred: this module is part of the server's start-up, these are not (tests/unit/test_startup.py)
    from hapa_lsp import config
    from hapa_lsp.backends import create_backend, make_client
    from hapa_lsp.prompts import TEMPLATES, family_for

    init: Any = None
    if args.settings:
        try:
            with open(args.settings, encoding="utf-8") as fh:
                init = json.load(fh)
        except (OSError, ValueError) as exc:
            print(f"E4001 cannot read settings file {args.settings}: {exc}")
            return 2
    settings, problems = config.load(environ=os.environ, init_options=init)
    lines = [p.message for p in problems]
    b = settings.backend
    endpoint = public_url(b.endpoint)  # the report is pasted into issues: never the URL's password
    family = family_for(b.completion_model, b.fim_template)

    async def probe():
        client = make_client(b)
        try:
            backend = create_backend(b, client)
            result = await backend.probe((b.completion_model, b.chat_model))
            fim = None
            if result.ok and b.kind == "openai" and family in TEMPLATES:
                fim = await backend.fim_styles(b.completion_model, TEMPLATES[family])
            return result, fim
        finally:
            await client.aclose()

    result, fim = asyncio.run(probe())
    lines.extend(result.problems)
    fim_report, fim_problem = _fim_advice(b, fim)
    if fim_problem:
        lines.append(fim_problem)
    report = {
        "settings": config.to_dict(settings),
        "model_server": {"kind": b.kind, "endpoint": endpoint, "reachable_and_ready": result.ok,
                         "latency_ms": round(result.latency_ms, 1), "models_available": result.models[:50],
                         "completion_prompt_family": family, "fim": fim_report},
        "problems": lines,
    }
    ok = result.ok and not fim_problem
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("hapa-lsp doctor")
        print("effective configuration (secrets masked):")
        for section, values in report["settings"].items():
            for k, v in values.items():
                print(f"  hapa.{section}.{k} = {json.dumps(v)}")
        status = "OK" if ok else "NOT USABLE"
        print(f"model server: {b.kind} at {endpoint}: {status}"
              + (f" ({result.latency_ms:.0f} ms)" if result.latency_ms else ""))
        print(f"completion prompt family: {family} (model {b.completion_model})")
        if fim_report is not None:
            print(f"fill-in-the-middle: native (prompt + suffix) {fim_report['native']}, "
                  f"template (FIM tokens) {fim_report['template']}"
                  + (f"; use {fim_report['advice']}" if fim_report.get("advice") else ""))
        if lines:
            print("problems:")
            for ln in lines:
                print(f"  - {ln}")
        else:
            print("no problems found")
    return 0 if ok else 1


def _fim_advice(b: Any, fim: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """(the report's ``fim`` member, a problem line or ""): which FIM style this server honours and which
    setting gets it. A mismatch is a problem: every inline completion would come back empty."""
    if fim is None:
        return None, ""
    current = "native" if b.fim_mode == "native" else "template"
    works = [m for m in ("template", "native") if fim[m] == "honoured"]
    advice = ""
    if fim["llama_server"]:
        advice = 'hapa.backend.kind "llamacpp" (FIM through /infill, its prompt cache reused)'
    if works:
        best = current if current in works else works[0]
        setting = f'hapa.backend.fimMode "{best}"'
        advice = f"{setting} or {advice}" if advice else setting
    report = dict(fim, current=current, advice=advice)
    if fim[current] in ("ignored", "rejected", "text"):
        what = {"ignored": "ignores the suffix", "rejected": "rejects the suffix field",
                "text": "reads the FIM tokens as plain text"}[fim[current]]
        err = errors.ConfigInvalid(f"hapa.backend.fimMode is {b.fim_mode!r} ({current}), but this server {what}, "
                                  f"so inline completions come back empty or wrong")
        return report, f"{err.code} {err.detail}: use {advice or 'a model with a FIM format'}"
    return report, ""


if __name__ == "__main__":
    sys.exit(main())
