"""Framing of the LSP byte stream (``Content-Length: N\\r\\n\\r\\n`` + N bytes of JSON), robust to a broken client.

pygls' reader trusts every byte: one wrong ``Content-Length``, a body without a header or junk without a line
end, and it reads header lines out of bodies and bodies out of headers for the rest of the session, while the
process stays alive and silent (so the editor never restarts it). ``FrameReader`` instead

* finds the next ``Content-Length:`` header wherever it is, discarding what comes before it;
* ends a body early when the next header appears inside it (the declared length was too long): a JSON text
  cannot contain that header, since its letters would have to be inside a string, where a raw CR is not allowed;
* skips a body longer than the cap (``hapa.server.maxMessageBytes``) in chunks, without buffering it, and
  resynchronises on a header inside it (the declared length was a lie) or after it;
* reports every such violation through ``on_violation``; the caller decides how loudly (once per incident).

Nothing here knows about pygls: ``read(n)`` is any coroutine returning up to ``n`` bytes (b"" at end of input).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MIN_MAX_MESSAGE_BYTES = 64 * 1024
MAX_MAX_MESSAGE_BYTES = 2 * 1024 * 1024 * 1024
CHUNK = 64 * 1024
#: Bytes of a skipped body kept to read its request id from.
HEAD_BYTES = 4096
#: The header block after ``Content-Length`` (``Content-Type`` ...) may not be longer than this.
MAX_HEADER_BYTES = 8192

HEADER = re.compile(rb"Content-Length:[ \t]*(\d{1,20})[ \t]*\r\n")
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"  # the characters of a header field name (RFC 9110)
_FIELD = re.compile(_TOKEN + rb"+:[^\r\n]*\r\n")
_FIELD_START = re.compile(_TOKEN + rb"*(?::[^\r\n]*)?\r?")  # what a field line looks like before its line end
_FIELDS_OR_BLANK = re.compile(rb"(?:" + _TOKEN + rb"+:[^\r\n]*\r\n|[ \t]*\r?\n)*")
# Longest tail of unscanned input that may be the start of a header split across two reads.
_KEEP = len(b"Content-Length: ") + 24


@dataclass(slots=True)
class Frame:
    """One message: its body, or for a body over the cap only its first bytes (``skipped`` is True)."""

    body: bytes
    declared: int
    skipped: bool = False


class FrameReader:
    """Turns a byte stream into message bodies, resynchronising on the next header after any damage."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], max_bytes: Callable[[], int],
                 on_violation: Callable[[str], None]):
        self._read = read
        self._max_bytes = max_bytes
        self._violation = on_violation
        self._buf = bytearray()
        self._eof = False

    async def _more(self) -> bool:
        """Append the next chunk of input; False at end of input."""
        if self._eof:
            return False
        data = await self._read(CHUNK)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the input (the tail of a body that turned out to hold the next header)."""
        self._buf[:0] = data

    async def next(self) -> Frame | None:
        """The next message, or None at end of input."""
        buf = self._buf
        while True:
            m = HEADER.search(buf)
            if m is None:
                # Whole lines can go (a header starts a line); of junk without line ends, all but a tail that
                # may be the start of a header split across two reads.
                cut = len(buf) - _KEEP
                if cut > 0:
                    nl = buf.rfind(b"\n", 0, cut)
                    if nl >= 0:
                        self._discard(nl + 1)
                    elif len(buf) > MAX_HEADER_BYTES:
                        self._discard(cut)
                if not await self._more():
                    if buf.strip():
                        self._discard(len(buf))
                    return None
                continue
            if m.start():
                self._discard(m.start())
                continue
            # The rest of the header block: more fields, then an empty line.
            pos = m.end()
            while True:
                if buf[pos:pos + 2] == b"\r\n":
                    start = pos + 2
                    break
                f = _FIELD.match(buf, pos)
                if f is not None:
                    pos = f.end()
                    continue
                end = min(len(buf), pos + MAX_HEADER_BYTES)
                if _FIELD_START.fullmatch(buf, pos, end) is None or end - pos >= MAX_HEADER_BYTES:
                    start = -1  # not a header field and not the empty line: this was no header
                    break
                if not await self._more():
                    start = -1
                    break
            if start < 0:
                self._violation(f"a Content-Length header without the empty line after it ({bytes(m.group(0))!r})")
                del buf[:m.end()]
                continue
            n = int(m.group(1))
            limit = self._max_bytes()
            if n > limit:
                return await self._skip(start, n, limit)
            return await self._body(start, n)

    def _discard(self, n: int) -> None:
        junk = bytes(self._buf[:n])
        del self._buf[:n]
        if _FIELDS_OR_BLANK.fullmatch(junk) is None:
            self._violation(f"{len(junk)} bytes that are not a message were skipped ({junk[:40]!r})")

    async def _body(self, start: int, n: int) -> Frame:
        buf = self._buf
        scanned = start
        while True:
            # A header beginning inside the declared body: the length was too long, the body ends there.
            m = HEADER.search(buf, max(start, scanned - _KEEP))
            if m is not None and m.start() < start + n:
                body = bytes(buf[start:m.start()])
                del buf[:m.start()]
                self._violation(f"Content-Length {n} runs into the next message's header after {len(body)} bytes")
                return Frame(body, n)
            if len(buf) >= start + n:
                body = bytes(buf[start:start + n])
                del buf[:start + n]
                return Frame(body, n)
            scanned = len(buf)
            if not await self._more():
                body = bytes(buf[start:])
                del buf[:]
                self._violation(f"the input ended {n - len(body)} bytes short of a {n}-byte message")
                return Frame(body, n)

    async def _skip(self, start: int, n: int, limit: int) -> Frame:
        """Read and discard an oversized body chunk by chunk; stop early at a header inside it."""
        buf = self._buf
        self._violation(f"a message declared {n} bytes, more than hapa.server.maxMessageBytes ({limit})")
        if len(buf) == start:
            await self._more()
        head = bytes(buf[start:start + min(n, HEAD_BYTES)])
        left = n
        del buf[:start]
        while True:
            m = HEADER.search(buf, 0, min(len(buf), left + _KEEP))
            if m is not None and m.start() < left:
                del buf[:m.start()]
                return Frame(head, n, skipped=True)
            if len(buf) >= left:
                del buf[:left]
                return Frame(head, n, skipped=True)
            # Keep only what may be the start of a header split across reads.
            drop = max(0, len(buf) - _KEEP)
            del buf[:drop]
            left -= drop
            if not await self._more():
                del buf[:]
                return Frame(head, n, skipped=True)


# A request's id, when it comes before anything nested: members before it can only be "jsonrpc" and "method" with
# string values, so the "id" found is the message's own (not one inside params).
_ID = re.compile(rb'\A[ \t\r\n]*\{[ \t\r\n]*(?:"(?:jsonrpc|method)"[ \t\r\n]*:[ \t\r\n]*"(?:[^"\\]|\\.)*"[ \t\r\n]*,'
                 rb'[ \t\r\n]*)*"id"[ \t\r\n]*:[ \t\r\n]*(-?\d{1,18}(?=[ \t\r\n]*[,}])|"(?:[^"\\]|\\.){0,200}")')


def recover_id(body: bytes) -> int | str | None:
    """The id of a request that cannot be read as a whole (truncated, nested too deep, too large), or None."""
    m = _ID.match(body)
    if m is None:
        return None
    try:
        value = json.loads(m.group(1))
    except ValueError:
        return None
    return value if isinstance(value, (int, str)) else None
