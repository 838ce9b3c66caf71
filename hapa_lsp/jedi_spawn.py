"""The jedi worker, started at the very beginning of a server process.

The server needs ~0.6 s to import pygls and lsprotocol before it can read ``initialize``; the worker is a separate
process, so started first it imports jedi and parses what every completion needs (``--prewarm``) on the other core
meanwhile. ``hapa_lsp.jedi_client.JediRunner`` adopts it for its first worker. Only the standard library here: this
module runs before anything else is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

_early: subprocess.Popen[bytes] | None = None


def start_early() -> None:
    """Start the worker now (``HAPA_JEDI_EARLY=0``: do not; the server starts one when jedi is first needed)."""
    global _early
    if _early is not None or os.environ.get("HAPA_JEDI_EARLY", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if os.name != "posix":
        return  # asyncio adopts a Popen's pipes only where they are file descriptors (not Windows' proactor)
    try:
        _early = subprocess.Popen([sys.executable, "-m", "hapa_lsp.jedi_worker", "--prewarm"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
    except OSError:
        _early = None  # the server starts its worker the usual way (and says so if that fails too)


def take() -> subprocess.Popen[bytes] | None:
    """The early worker if it is still running (once: the caller owns it from now on)."""
    global _early
    proc, _early = _early, None
    if proc is not None and proc.poll() is not None:
        return None
    return proc


def discard() -> None:
    """Jedi is off in this session's settings: end the early worker (killed and reaped: milliseconds)."""
    proc = take()
    if proc is None:
        return
    try:
        proc.kill()
        proc.wait(timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        pass
