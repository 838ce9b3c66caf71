"""Operations: metrics and incident wiring, the command rate-limit gate, the sidecar, and the ops commands.

Commands: ``hapa.health``, ``hapa.errors.dashboard``, ``hapa.errors.patterns``, ``hapa.errors.get``,
``hapa.analytics.performance``, ``hapa.cache.clear``, ``hapa.cache.stats``; they answer the same JSON
as the sidecar's endpoints.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from hapa_lsp.protocol import rpc_error
from hapa_lsp import __version__, errors
from hapa_lsp.features.commands import first_object
from hapa_lsp.ops.service import CACHE_TYPES
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.server import HapaServer


def register(server: HapaServer) -> None:
    """Register the operations commands."""

    def _wrap(name: str, fn: Any) -> Any:
        # No annotation on ``ls``: pygls evaluates a command handler's type hints at call time.
        async def handler(ls, *args: Any) -> Any:  # type: ignore[no-untyped-def]
            try:
                return await fn(ls, *args)
            except errors.HapaError as exc:
                ls.record_incident(exc, name)
                raise rpc_error(exc) from exc
        handler.__name__ = fn.__name__
        return handler

    async def health(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return await ls.ops.health()

    async def errors_dashboard(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return await ls.ops.errors_dashboard()

    async def errors_patterns(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = first_object(args, "hapa.errors.patterns")
        period = a.get("period", "7d")
        if not isinstance(period, str):
            raise errors.InvalidInput("period must be a string: 1h, 24h, 7d or 30d", field="period")
        return await ls.ops.errors_patterns(period)

    async def errors_get(ls: HapaServer, *args: Any) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], str):
            incident_id = args[0]
        else:
            incident_id = first_object(args, "hapa.errors.get").get("incident_id")
        if not incident_id:
            raise errors.MissingField("incident_id is required", field="incident_id")
        return await ls.ops.incident(incident_id)

    async def analytics_performance(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return ls.ops.performance()

    async def cache_clear(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = first_object(args, "hapa.cache.clear")
        if "cache_type" not in a:
            raise errors.MissingField("cache_type is required: code_generation, completions, user_profiles or all", field="cache_type")
        cache_type = a["cache_type"]
        if cache_type not in CACHE_TYPES:
            raise errors.InvalidInput(f"cache_type must be code_generation, completions, user_profiles or all, "
                                    f"got {cache_type!r}", field="cache_type")
        if a.get("confirm") is not True:
            raise errors.MissingField("clearing a cache needs confirm: true", field="confirm")
        region = CACHE_TYPES[cache_type]
        from hapa_lsp.cache_redis import TieredCache

        cache = ls.upstream.cache
        if isinstance(cache, TieredCache):
            memory, shared = await cache.aclear(region)
        else:
            memory, shared = cache.clear(region), 0
        get_logger().info("cache cleared", cache_type=cache_type, memory=memory, shared=shared)
        return {"cache_type": cache_type, "cleared": {"memory": memory, "shared": shared}, "status": "cleared"}

    async def cache_stats(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return ls.upstream.cache.stats()

    for name, fn in (("hapa.health", health), ("hapa.errors.dashboard", errors_dashboard),
                     ("hapa.errors.patterns", errors_patterns), ("hapa.errors.get", errors_get),
                     ("hapa.analytics.performance", analytics_performance), ("hapa.cache.clear", cache_clear),
                     ("hapa.cache.stats", cache_stats)):
        server.command(name)(_wrap(name, fn))
