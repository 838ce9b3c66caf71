"""workspace/executeCommand: the commands of the core (acceptance feedback, stats, status)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapa_lsp.protocol import rpc_error
from hapa_lsp import errors
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.server import HapaServer


def first_object(args: tuple[Any, ...], command: str) -> dict[str, Any]:
    """The command's single JSON object argument (``{}`` when none); E4001 for anything else."""
    if not args:
        return {}
    if len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    raise errors.InvalidInput(f"{command} takes one JSON object argument", field="arguments")


def register(server: HapaServer) -> None:
    """Register the core commands."""
    from hapa_lsp.features.inline import ACCEPT_COMMAND
    @server.command(ACCEPT_COMMAND)
    async def did_accept(ls: Any, *args: Any) -> dict[str, Any]:  # Any: pygls evaluates these annotations
        from hapa_lsp.features.generate import record_suggestion_event

        try:
            info = first_object(args, ACCEPT_COMMAND)
            ls.upstream.count("accepted")
            # Stored as feedback: the acceptance rate per model and file type is computed from these rows.
            await record_suggestion_event(ls, "accepted", info, ACCEPT_COMMAND)
        except errors.HapaError as exc:
            ls.record_incident(exc, ACCEPT_COMMAND)
            raise rpc_error(exc) from exc
        get_logger().info("suggestion accepted", request_id=info.get("request_id"), model=info.get("model"),
                          language=info.get("language"))
        return {"recorded": True}

    @server.command("hapa.stats")
    def stats(ls: Any, *args: Any) -> dict[str, Any]:  # Any: pygls evaluates these annotations
        out = ls.engine.stats()
        jedi = ls.components["jedi"]
        if jedi is not None:
            out["jedi_skipped"] = jedi.skipped
            out["jedi_worker"] = {"pid": jedi.pid, "rss_mb": round(jedi.rss_mb, 1),
                                  "replaced": jedi.restarts, "failures": jedi.failures}
        out["status"] = ls.status_state
        return out
