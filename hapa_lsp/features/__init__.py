"""LSP surfaces, one module each; ``register_all`` wires them into a server.

::

    hapa_lsp/features/
      lifecycle.py     initialize / initialized / configuration / didOpen, didChange, didClose / shutdown
      inline.py        textDocument/inlineCompletion (ghost text)            -> engine.py
      completion.py    textDocument/completion (jedi's items + the AI item)  -> engine.py, jedi_client.py
      code_actions.py  textDocument/codeAction, codeAction/resolve, hapa.codeAction.apply -> generation.py
      generate.py      hapa.generateCode, hapa.agent.*, hapa.explain, hapa.history.*, hapa.feedback*, ...
      commands.py      hapa.didAcceptCompletion, hapa.stats
      ops.py           hapa.health, hapa.errors.*, hapa.cache.*               -> ops/service.py
      next_edit.py     textDocument/copilotInlineEdit, didShowInlineEdit (next edits) -> next_edit/engine.py
      -- shared, not surfaces --
      common.py        the error boundary, command names, open documents, positions
      args.py          command arguments as attrs classes (structured with pygls' converter)
      running.py       running a generation for a handler: progress, chunks, history, edits to the client

A feature module imports ``common``, ``args`` and ``running``, never another feature module. A new surface is a
module with ``register(server)`` and one entry in ``SURFACES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hapa_lsp.features import code_actions, commands, completion, generate, inline, lifecycle, next_edit, ops

if TYPE_CHECKING:
    from hapa_lsp.server import HapaServer

#: Registered in this order (lifecycle first: its handlers run before any feature's).
SURFACES = (lifecycle, inline, completion, commands, ops, generate, code_actions, next_edit)


def register_all(server: HapaServer) -> None:
    """Register every feature and command on ``server``."""
    for surface in SURFACES:
        surface.register(server)
