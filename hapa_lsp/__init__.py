"""hapa-lsp: an AI coding assistant delivered as a Language Server."""

# A literal, not importlib.metadata: looking the distribution up costs ~50 ms at every start.
__version__ = "0.1.0"
