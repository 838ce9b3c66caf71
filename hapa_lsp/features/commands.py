"""workspace/executeCommand: the commands of the core (acceptance feedback, stats)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapa_lsp.features import args as A
from hapa_lsp.features.common import ACCEPT_COMMAND, arguments, boundary
from hapa_lsp.features.running import record_suggestion_event
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.server import HapaServer


def register(server: HapaServer) -> None:
    """Register the core commands."""

    @server.command(ACCEPT_COMMAND)
    @boundary(ACCEPT_COMMAND)
    async def did_accept(ls: HapaServer, *args: Any) -> dict[str, Any]:
        info = arguments(ls, args, A.SuggestionEventArgs, ACCEPT_COMMAND)
        ls.upstream.count("accepted")
        # Stored as feedback: the acceptance rate per model and file type is computed from these rows.
        await record_suggestion_event(ls, "accepted", info)
        get_logger().info("suggestion accepted", request_id=info.request_id, model=info.model,
                          language=info.language)
        return {"recorded": True}

    @server.command("hapa.stats")
    @boundary("hapa.stats")
    def stats(ls: HapaServer, *args: Any) -> dict[str, Any]:
        out = ls.engine.stats()
        jedi = ls.components["jedi"]
        if jedi is not None:
            out["jedi_skipped"] = jedi.skipped
            out["jedi_worker"] = {"pid": jedi.pid, "rss_mb": round(jedi.rss_mb, 1),
                                  "replaced": jedi.restarts, "failures": jedi.failures,
                                  "warming": jedi.warming, "helper_runs": jedi.aside_runs}
        out["status"] = ls.status_state
        return out
