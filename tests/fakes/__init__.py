"""Test doubles for hapa-lsp: a scripted fake model server (see tests.fakes.model_server)."""

from __future__ import annotations

from typing import Any

__all__ = ["FakeModelServer", "RequestRecord", "FAULTS", "tokenize", "apply_stop"]


def __getattr__(name: str) -> Any:
    """Import lazily so `python -m tests.fakes.model_server` doesn't import the module twice."""
    if name in __all__:
        from tests.fakes import model_server

        return getattr(model_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
