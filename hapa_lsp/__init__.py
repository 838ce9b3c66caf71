"""hapa-lsp: an AI coding assistant delivered as a Language Server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hapa-lsp")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
