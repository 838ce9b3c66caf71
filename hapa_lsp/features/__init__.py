"""LSP surfaces, one module each; ``register_all`` wires them into a server."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hapa_lsp.server import HapaServer


def register_all(server: HapaServer) -> None:
    """Register every feature and command on ``server``."""
    from hapa_lsp.features import commands, completion, inline, lifecycle

    lifecycle.register(server)
    inline.register(server)
    completion.register(server)
    commands.register(server)

    from hapa_lsp.features import ops  # sidecar, metrics, incidents, rate limits, cache commands (issue 4)

    ops.register(server)

    from hapa_lsp.features import code_actions, generate

    generate.register(server)
    code_actions.register(server)
