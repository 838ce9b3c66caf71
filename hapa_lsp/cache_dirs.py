"""Directories of hapa-lsp's own caches (never a directory another tool uses). No heavy imports: the server's
process and the jedi worker both ask."""

from __future__ import annotations

import os

import platformdirs


def jedi_cache_directory() -> str:
    """hapa-lsp's own jedi/parso cache directory (``HAPA_JEDI_CACHE_DIR`` or ``<user cache>/hapa-lsp/jedi``)."""
    explicit = os.environ.get("HAPA_JEDI_CACHE_DIR")
    if explicit:
        return explicit
    return os.path.join(platformdirs.user_cache_dir("hapa-lsp", appauthor=False), "jedi")


def facts_cache_directory() -> str:
    """Where jedi's facts are kept between sessions (``context.facts_store``): inside hapa's jedi cache."""
    return os.path.join(jedi_cache_directory(), "facts-v1")
