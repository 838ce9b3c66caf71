"""hapa-lsp: an AI coding assistant delivered as a Language Server.

::

    editor ──stdio/tcp/ws──> protocol.py (HapaProtocol) ──> features/* (thin handlers, one error boundary)
                                                               │
               typing path: engine.py ── context/ ──┐          │ generations: features/running.py ── generation.py
                                                    └── upstream.py (backend + cache + accounting) ──┘
                                                          └── backends/ resilience.py cache*.py ──> model server
    next edits: features/next_edit.py ── next_edit/ (history, engine, formats, edits) ── upstream.py
    server.py owns the components; ops/ serves metrics, health and incidents; store.py / history.py persist.

README.md ("Architecture") follows one keystroke, one code action and one command through these modules.
"""

# A literal, not importlib.metadata: looking the distribution up costs ~50 ms at every start.
__version__ = "0.1.0"
