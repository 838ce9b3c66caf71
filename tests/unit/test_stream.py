"""hapa_lsp.stream: LSP framing that resynchronises after a broken frame; what the protocol answers for command
arguments UTF-8 cannot encode and for a handler failing unexpectedly; the storage edge for such text."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from pathlib import Path

import pytest

from hapa_lsp import errors
from hapa_lsp.ops.incidents import IncidentLog
from hapa_lsp.protocol import unencodable_field
from hapa_lsp.server import HapaServer
from hapa_lsp.store import Store
from hapa_lsp.stream import CHUNK, FrameReader, recover_id

pytestmark = pytest.mark.timeout(20)


def frame(obj: object, *, extra_header: bytes = b"", delta: int = 0) -> bytes:
    body = json.dumps(obj).encode()
    return extra_header + b"Content-Length: %d\r\n\r\n" % (len(body) + delta) + body


class Feed:
    """A read(n) over fixed bytes, ``step`` bytes at a time at most, recording how much the reader buffers."""

    def __init__(self, data: bytes, step: int = CHUNK):
        self.data = memoryview(data)
        self.pos = 0
        self.step = step
        self.reader: FrameReader | None = None
        self.most_buffered = 0

    async def read(self, n: int) -> bytes:
        if self.reader is not None:
            self.most_buffered = max(self.most_buffered, len(self.reader._buf))
        out = bytes(self.data[self.pos:self.pos + min(n, self.step)])
        self.pos += len(out)
        return out


def read_all(data: bytes, *, step: int = CHUNK, cap: int = 1 << 20) -> tuple[list[bytes], list[str], Feed]:
    feed = Feed(data, step)
    violations: list[str] = []
    reader = FrameReader(feed.read, lambda: cap, violations.append)
    feed.reader = reader

    async def run() -> list[bytes]:
        out = []
        while (f := await reader.next()) is not None:
            out.append(b"<skipped>" if f.skipped else f.body)
        return out

    return asyncio.run(run()), violations, feed


MSG = {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"text": "Content-Length: 5\r\n\r\n{}"}}
OK = {"jsonrpc": "2.0", "id": 2, "method": "ok"}


def test_a_clean_stream_read_a_byte_at_a_time_has_no_violations():
    data = frame(MSG) + frame(OK, extra_header=b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n") * 2
    bodies, violations, _ = read_all(data, step=1)
    assert [json.loads(b) for b in bodies] == [MSG, OK, OK]
    assert violations == []


@pytest.mark.parametrize("damage", [
    frame(MSG, delta=-10),  # body cut short: the rest is junk before the next header
    b"{\"jsonrpc\": \"2.0\"} no header at all",
    b"\x00\xff binary junk without a line end",
    b"Content-Length: 12\r\n{\"no\": \"blank line\"}",
    b"\r\n\r\n" + bytes(range(256)) * 40,  # junk longer than a header block
], ids=["short", "headerless", "junk", "no-blank-line", "long-junk"])
@pytest.mark.parametrize("step", [1, 7, CHUNK])
def test_damage_is_skipped_up_to_the_next_header(damage, step):
    bodies, violations, _ = read_all(damage + frame(OK), step=step)
    assert json.loads(bodies[-1]) == OK
    assert violations, "the damage is reported"


@pytest.mark.parametrize("step", [1, 5, CHUNK])
def test_a_length_too_long_ends_at_the_next_header(step):
    bodies, violations, _ = read_all(frame(MSG, delta=1000) + frame(OK), step=step)
    assert [json.loads(b) for b in bodies] == [MSG, OK]
    assert violations


def test_an_oversized_body_is_skipped_in_chunks_not_buffered():
    big = frame({"jsonrpc": "2.0", "id": 7, "method": "x", "params": ["y" * (8 << 20)]})
    bodies, violations, feed = read_all(big + frame(OK), cap=1 << 20)
    assert bodies[0] == b"<skipped>" and json.loads(bodies[1]) == OK
    assert any("maxMessageBytes" in v for v in violations)
    assert feed.most_buffered < 2 * CHUNK, feed.most_buffered


def test_a_declared_length_no_client_means_resynchronises_on_the_next_header():
    bodies, violations, _ = read_all(b"Content-Length: 1000000000000\r\n\r\n" + frame(OK), step=3)
    assert bodies[0] == b"<skipped>" and json.loads(bodies[1]) == OK
    assert violations


def test_recover_id_reads_only_the_messages_own_id():
    assert recover_id(b'{"jsonrpc": "2.0", "id": 12, "method": "m", "params": [[[[') == 12
    assert recover_id(b'{"method": "a\\"b", "id": "r-1", "params"') == "r-1"
    assert recover_id(b'{"params": {"id": 3}, "id": 4}') is None  # the first "id" is inside params
    assert recover_id(b'{"id": 1.5}') is None and recover_id(b"[]") is None


def test_unencodable_field_names_the_field_like_commands_do():
    assert unencodable_field([{"user_question": "fine ü", "code_context": "x\ud800"}]) == "code_context"
    assert unencodable_field([{"user_profile": {"style": ["a", "\udfff"]}}]) == "user_profile.style[1]"
    assert unencodable_field([{"\udc80bad": 1}]) == "\\udc80bad"
    assert unencodable_field([{}, "\ud800"]) == "arguments[1]"
    assert unencodable_field([{"a": [[[[[["ok"]]]]]]}]) is None


class Written:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def messages(self) -> list[dict]:
        out = []
        rest = self.data
        while rest:
            head, _, rest = rest.partition(b"\r\n\r\n")
            n = int(head.split(b"Content-Length:")[1].split(b"\r\n")[0])
            out.append(json.loads(rest[:n]))
            rest = rest[n:]
        return out


def test_a_handler_failing_unexpectedly_is_answered_with_e5004_and_no_traceback():
    """Guards HapaProtocol._send_handler_result (pygls internal): pygls would put the traceback into data."""
    server = HapaServer()
    out = Written()
    server.protocol.set_writer(out)
    fut: concurrent.futures.Future = concurrent.futures.Future()
    try:
        raise KeyError("internal detail")
    except KeyError as exc:
        fut.set_exception(exc)
    server.protocol._send_handler_result(fut, msg_id=5)
    [msg] = out.messages()
    assert msg["id"] == 5 and msg["error"]["data"]["code"] == "E5004", msg
    assert msg["error"]["data"]["incident_id"] in msg["error"]["message"]
    assert "traceback" not in json.dumps(msg).lower() and "internal detail" not in json.dumps(msg), msg
    assert [i["incident_id"] for i in server.incidents] == [msg["error"]["data"]["incident_id"]]


# ---- the storage edge -------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path):
    s = Store(str(tmp_path / "hapa.db")).open()
    yield s
    s.close()


def test_an_incident_whose_text_utf8_cannot_encode_is_stored(store):
    log_ = IncidentLog(lambda: store, lambda: 30)
    err = errors.InvalidInput("hapa.generateCode: '\udc80bad' is not a known field", field="\udc80bad")
    log_.record(err, "hapa.generateCode")
    log_.submit(lambda: None).result(timeout=5)
    got = log_.get(err.incident_id)
    assert got["detail"] == "hapa.generateCode: '\\udc80bad' is not a known field"
    log_.close()


def test_a_value_the_database_cannot_take_is_e5003(store):
    with pytest.raises(errors.HapaError) as exc:
        store.execute("SELECT ?", (2 ** 70,))
    assert exc.value.code == "E5003"


def test_an_incident_write_failing_otherwise_is_logged_as_e5003_not_raised(store, caplog):
    log_ = IncidentLog(lambda: store, lambda: 30)

    def broken(*_: object) -> None:
        raise RuntimeError("disk on fire")

    log_._safe(broken)  # on the incident thread in the product; an exception there would vanish unseen
    assert log_._write_failed
    assert any("E5003" in str(r.msg) for r in caplog.records), caplog.records

