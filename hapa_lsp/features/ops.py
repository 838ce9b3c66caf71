"""The operations commands: ``hapa.health``, ``hapa.errors.dashboard``, ``hapa.errors.patterns``,
``hapa.errors.get``, ``hapa.analytics.performance``, ``hapa.cache.clear``, ``hapa.cache.stats``.

They answer the same JSON as the sidecar's endpoints, from the server's ``Ops`` (``hapa_lsp.ops.service``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.features import args as A
from hapa_lsp.features.common import arguments, boundary, first_object
from hapa_lsp.log import get_logger
from hapa_lsp.ops.service import CACHE_TYPES

if TYPE_CHECKING:
    from hapa_lsp.server import HapaServer


def register(server: HapaServer) -> None:
    """Register the operations commands."""

    async def health(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return await ls.ops.health()

    async def errors_dashboard(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return await ls.ops.errors_dashboard()

    async def errors_patterns(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.ErrorsPatternsArgs, "hapa.errors.patterns")
        return await ls.ops.errors_patterns(a.period)

    async def errors_get(ls: HapaServer, *args: Any) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], str):  # the id alone, as the dashboard links it
            incident_id = args[0]
        else:
            incident_id = first_object(args, "hapa.errors.get").get("incident_id")
        if not incident_id:
            raise errors.MissingField("incident_id is required", field="incident_id")
        return await ls.ops.incident(incident_id)

    async def analytics_performance(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return ls.ops.performance()

    async def cache_clear(ls: HapaServer, *args: Any) -> dict[str, Any]:
        a = arguments(ls, args, A.CacheClearArgs, "hapa.cache.clear")
        if a.cache_type not in CACHE_TYPES:
            raise errors.InvalidInput(f"cache_type must be code_generation, completions, user_profiles or all, "
                                      f"got {a.cache_type!r}", field="cache_type")
        if a.confirm is not True:
            raise errors.MissingField("clearing a cache needs confirm: true", field="confirm")
        memory, shared = await ls.upstream.clear_cache(CACHE_TYPES[a.cache_type])
        get_logger().info("cache cleared", cache_type=a.cache_type, memory=memory, shared=shared)
        return {"cache_type": a.cache_type, "cleared": {"memory": memory, "shared": shared}, "status": "cleared"}

    async def cache_stats(ls: HapaServer, *args: Any) -> dict[str, Any]:
        return ls.upstream.cache.stats()

    for name, fn in (("hapa.health", health), ("hapa.errors.dashboard", errors_dashboard),
                     ("hapa.errors.patterns", errors_patterns), ("hapa.errors.get", errors_get),
                     ("hapa.analytics.performance", analytics_performance), ("hapa.cache.clear", cache_clear),
                     ("hapa.cache.stats", cache_stats)):
        server.command(name)(boundary(name)(fn))
