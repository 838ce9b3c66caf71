"""The one error boundary every handler goes through (features.common.boundary), and the layering rule that
feature modules do not import each other."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest
from pygls.exceptions import JsonRpcException

from hapa_lsp import errors
from hapa_lsp.features.common import boundary
from hapa_lsp.server import HapaServer

ROOT = Path(__file__).resolve().parents[2]


class Recorder(HapaServer):
    """A server whose incident recording and status are observed instead of stored or sent."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str]] = []

    def record_incident(self, err: errors.HapaError, method: str) -> None:
        self.recorded.append((err.code, method))

    def background_failure(self, err: errors.HapaError, request_id: str = "", explicit: bool = False,
                           method: str = "") -> None:
        self.failures.append((err.code, method))


def _raising(exc: BaseException):
    async def handler(ls: Any, *args: Any) -> Any:
        raise exc

    return handler


async def test_a_hapa_error_is_recorded_once_and_answered_with_its_catalog_data():
    ls = Recorder()
    err = errors.MissingField("the field 'x' is required", field="x")
    with pytest.raises(JsonRpcException) as info:
        await boundary("hapa.cmd")(_raising(err))(ls)
    assert info.value.data["code"] == "E4002" and info.value.data["field"] == "x"
    assert ls.recorded == [("E4002", "hapa.cmd")] and err.recorded
    with pytest.raises(JsonRpcException):
        await boundary("hapa.other")(_raising(err))(ls)
    assert ls.recorded == [("E4002", "hapa.cmd")]  # recorded errors are not counted twice


async def test_a_document_not_open_is_answered_but_never_an_incident():
    ls = Recorder()
    with pytest.raises(JsonRpcException) as info:
        await boundary("hapa.cmd")(_raising(errors.DocumentNotOpen("file:///a.py is not open")))(ls)
    assert info.value.data["code"] == "E4006" and ls.recorded == []


async def test_a_bug_is_e5004_without_its_text():
    ls = Recorder()
    with pytest.raises(JsonRpcException) as info:
        await boundary("hapa.cmd")(_raising(KeyError("secret detail")))(ls)
    assert info.value.data["code"] == "E5004" and "secret detail" not in str(info.value.data)
    assert ls.recorded == [("E5004", "hapa.cmd")]


async def test_quiet_requests_get_the_fallback_and_a_bug_is_still_reported():
    ls = Recorder()
    quiet = boundary("inline", quiet=lambda params: params == "automatic", fallback="nothing")
    assert await quiet(_raising(errors.ModelUnreachable("down")))(ls, "automatic") == "nothing"
    assert ls.recorded == [] and ls.failures == []  # the engine already reported the model failure
    assert await quiet(_raising(ValueError("bug")))(ls, "automatic") == "nothing"
    assert ls.failures == [("E5004", "inline")]
    with pytest.raises(JsonRpcException):
        await quiet(_raising(errors.ModelUnreachable("down")))(ls, "invoked")


async def test_notifications_record_and_drop_their_failures():
    ls = Recorder()
    assert await boundary("hapa/x", notification=True)(_raising(errors.InvalidInput("bad", field="f")))(ls, {}) \
        is None
    assert ls.recorded == [("E4001", "hapa/x")]


async def test_cancellation_and_rpc_errors_pass_through_and_sync_handlers_stay_sync():
    ls = Recorder()
    with pytest.raises(asyncio.CancelledError):
        await boundary("m")(_raising(asyncio.CancelledError()))(ls)
    ready = JsonRpcException(code=-32602, message="already an answer")
    with pytest.raises(JsonRpcException) as info:
        await boundary("m")(_raising(ready))(ls)
    assert info.value is ready and ls.recorded == []

    def sync(ls: Any, *args: Any) -> int:
        return len(args)

    wrapped = boundary("m")(sync)
    assert not asyncio.iscoroutinefunction(wrapped) and wrapped(ls, 1, 2) == 2 and wrapped.__name__ == "sync"


def test_every_handler_is_behind_the_boundary():
    """Each registered feature and command of the server is a boundary-wrapped function, except lifecycle's
    notifications (they have no answer and report their own failures)."""
    from hapa_lsp.server import create_server

    server = create_server()
    fm = server.protocol.fm
    handlers = {**{f"command {k}": v for k, v in fm.commands.items()}, **fm.features}
    lifecycle = {"initialize", "initialized", "shutdown", "workspace/didChangeConfiguration",
                 "textDocument/didOpen", "textDocument/didChange", "textDocument/didClose"}
    unwrapped = [name for name, fn in handlers.items()
                 if name not in lifecycle and not hasattr(getattr(fn, "func", fn), "boundary")]
    assert unwrapped == []
    assert len(handlers) > 25  # the commands and features are really there


def test_no_feature_module_imports_another():
    shared = {"common", "args", "running"}
    found = []
    for path in (ROOT / "hapa_lsp" / "features").glob("*.py"):
        if path.stem in shared | {"__init__"}:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                parts = n.split(".")
                if parts[:2] == ["hapa_lsp", "features"] and len(parts) > 2 and parts[2] not in shared:
                    found.append(f"{path.name} imports {n}")
    assert found == []
