"""`hapa-lsp generate "question"`: the CLI face of hapa.generateCode (code on stdout, the rest on stderr)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from hapa_lsp import config, errors, history
from hapa_lsp.config import Settings
from hapa_lsp.generation import (
    EXPLANATION_STYLES,
    OUTPUT_STRUCTURES,
    SKILL_LEVELS,
    Generation,
    GenerationRejected,
    GenerationRequest,
    Profile,
    generate,
)
from hapa_lsp.store import Store


def add_parser(sub: Any) -> None:
    """Add the ``generate`` subcommand to the CLI."""
    g = sub.add_parser("generate", help="generate code for a question and print it (same path as hapa.generateCode)")
    g.add_argument("question", help="what the code should do")
    g.add_argument("--context", default=None, help="a file whose text is sent as code context")
    g.add_argument("--language", default="python")
    g.add_argument("--skill", choices=SKILL_LEVELS, default=None, help="overrides hapa.profile.pythonSkillLevel")
    g.add_argument("--structure", choices=OUTPUT_STRUCTURES, default=None,
                   help="overrides hapa.profile.codeOutputStructure")
    g.add_argument("--style", choices=EXPLANATION_STYLES, default=None, help="overrides hapa.profile.explanationStyle")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--json", action="store_true", help="print the hapa.generateCode result fields as JSON")


def cli_run(args: Any) -> int:
    """Run ``hapa-lsp generate``: code on stdout, explanation and errors on stderr; exit 1 on failure.

    With ``--json`` stdout always holds one JSON object, ``status`` "success" or "error" (then with ``code``)."""
    # deferred: the upstream path (httpx, backends, cache) is only for a generate run; build_parser(full=True) imports
    # this module for every --help and for `hapa-lsp context` too
    from hapa_lsp.upstream import Upstream

    settings, problems = config.load(environ=os.environ)
    for p in problems:
        print(p.message, file=sys.stderr)
    override = {k: v for k, v in (("pythonSkillLevel", args.skill), ("codeOutputStructure", args.structure),
                                  ("explanationStyle", args.style)) if v}
    context = ""
    if args.context:
        try:
            with open(args.context, encoding="utf-8") as fh:
                context = fh.read()
        except OSError as exc:
            err = errors.InvalidInput(f"cannot read {args.context}: {exc.strerror}", field="--context")
            print(err.message, file=sys.stderr)
            if args.json:
                print(json.dumps(_failure(err, None, 0.0), indent=2))
            return 2
    profile = Profile.from_settings(settings.profile).merged(override)
    req = GenerationRequest("generate", question=args.question, code_context=context, language=args.language,
                  profile=profile, temperature=args.temperature)

    async def go() -> Generation:
        upstream = Upstream(settings)
        try:
            return await generate(upstream, settings, req)
        finally:
            await upstream.aclose()

    t0 = time.perf_counter()
    try:
        gen = asyncio.run(go())
    except errors.HapaError as exc:
        print(exc.message, file=sys.stderr)
        rejected = exc.generation if isinstance(exc, GenerationRejected) else None
        if rejected is not None:
            print(rejected.code, file=sys.stderr)
        _cli_record(settings, req, "rejected" if exc.code == "E4011" else "error", None, t0, exc.incident_id)
        if args.json:
            # A --json caller parses stdout: it gets the failure as an object too (hapa.generateCode's shape).
            print(json.dumps(_failure(exc, rejected, (time.perf_counter() - t0) * 1000), indent=2))
        return 1
    _cli_record(settings, req, "success", gen, t0, None)
    if args.json:
        print(json.dumps({"status": "success", "generated_code": gen.code, "explanation": gen.explanation,
                          "response_time_ms": round(gen.ms, 1), "model": gen.model,
                          "user_profile": profile.to_dict(),
                          "validation": gen.report.to_dict() if gen.report else None}, indent=2))
        return 0
    print(gen.code)
    if gen.report is not None:
        for i in gen.report.issues:
            print(f"warning: line {i.line + 1}: {i.rule}: {i.message}", file=sys.stderr)
    if gen.explanation:
        print(f"\n{gen.explanation}", file=sys.stderr)
    return 0


def _failure(exc: errors.HapaError, gen: Generation | None, ms: float) -> dict[str, Any]:
    """The --json body of a failed generation: status, code, incident id, and the rejected attempt if any."""
    out: dict[str, Any] = {"status": "error", "code": exc.code, "incident_id": exc.incident_id,
                           "generated_code": gen.code if gen is not None else "",
                           "explanation": gen.explanation if gen is not None else "",
                           "response_time_ms": round(ms, 1), "error": exc.to_data()}
    if gen is not None and gen.report is not None:
        out["validation"] = gen.report.to_dict()
    return out


def _cli_record(settings: Settings, req: GenerationRequest, status: str, gen: Generation | None, t0: float,
                incident_id: str | None) -> None:
    """Keep the CLI's generation in the history too; a database problem only costs the history row."""
    try:
        store = Store(settings.storage.path).open()
        try:
            history.record_generation(
                store, profile=req.profile.to_dict(), kind="generate", question=req.question, uri="",
                language=req.language, agent="", model=gen.model if gen else "",
                prompt_tokens=gen.prompt_tokens if gen else 0, completion_tokens=gen.completion_tokens if gen else 0,
                latency_ms=round((time.perf_counter() - t0) * 1000, 1), status=status,
                generated_code=gen.code if gen else "", explanation=gen.explanation if gen else "",
                incident_id=incident_id)
        finally:
            store.close()
    except errors.HapaError:
        pass
