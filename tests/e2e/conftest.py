"""End-to-end fixtures: the real server in a subprocess, driven by pytest-lsp, against the fake model server."""

from __future__ import annotations

import asyncio
import os
import tempfile
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import make_test_lsp_client

from tests.fakes.model_server import FakeModelServer


def editor_capabilities() -> types.ClientCapabilities:
    """Neovim 0.11's real capabilities plus inline completion (no bundled profile has it)."""
    caps = client_capabilities("neovim")
    assert caps.text_document is not None
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities(dynamic_registration=False)
    return caps


def make_client() -> LanguageClient:
    """The pytest-lsp client, also recording our ``hapa/status`` notifications."""
    client = make_test_lsp_client()
    client.statuses = []  # type: ignore[attr-defined]

    @client.feature("hapa/status")
    def on_status(ls: LanguageClient, params: Any) -> None:
        ls.statuses.append(params)  # type: ignore[attr-defined]

    return client


def server_env(fake: FakeModelServer | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment (pytest-lsp replaces it whole) plus settings pointing at the fake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPA_", "AI_MODEL_"))}
    if fake is not None:
        env["HAPA_BACKEND_ENDPOINT"] = fake.url
    env.setdefault("HAPA_BACKEND_CONNECT_TIMEOUT", "1")
    # Tests never write into the user's data directory nor compete for the sidecar's default port.
    env.setdefault("HAPA_STORAGE_PATH", os.path.join(tempfile.mkdtemp(prefix="hapa-test-"), "hapa.db"))
    env.setdefault("HAPA_SIDECAR_PORT", "0")
    env.update(extra or {})
    return env


async def start_client(fake: FakeModelServer | None, *, init_options: dict[str, Any] | None = None,
                       env: dict[str, str] | None = None, capabilities: types.ClientCapabilities | None = None,
                       configuration: dict[str, Any] | None = None, root: Path | None = None) -> LanguageClient:
    """Start ``python -m hapa_lsp`` and initialize a session like an editor would."""
    config = ClientServerConfig(server_command=[sys.executable, "-m", "hapa_lsp"], client_factory=make_client,
                                server_env=server_env(fake, env))
    client = await config.start()
    assert isinstance(client, LanguageClient)
    if configuration is not None:
        client.set_configuration(configuration)
    root_uri = root.as_uri() if root else None
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities or editor_capabilities(),
        root_uri=root_uri,
        workspace_folders=[types.WorkspaceFolder(uri=root_uri, name="ws")] if root_uri else None,
        initialization_options=init_options,
    ))
    # The server says "ready" once it has read workspace/configuration; editors may type before that,
    # but tests that assert on settings must not race it.
    for _ in range(250):
        if client.statuses:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.02)
    return client


async def stop_client(client: LanguageClient) -> None:
    """Shut the session down the way an editor does; a server that does not exit is killed (pytest-lsp's
    ``stop`` alone waits for the process forever)."""
    try:
        await asyncio.wait_for(client.shutdown_session(), 10)
    except Exception:  # noqa: BLE001 - the test's own assertion is what matters; the server must go anyway
        pass
    finally:
        await kill_server(client)


async def kill_server(client: LanguageClient) -> None:
    """End the server process (SIGKILL after 5 s) and the client."""
    proc = getattr(client, "_server", None)
    if proc is not None and proc.returncode is None:
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
    await asyncio.wait_for(client.stop(), 10)


def reset_fake(server: FakeModelServer) -> FakeModelServer:
    """A module-shared fake model server back to a clean state for the next test."""
    server.restore()
    server.configure(latency=0.0, token_delay=0.0)
    server.responses.clear()
    server.reset()
    return server


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeModelServer]:
    """A fake model server (Ollama + OpenAI dialects) on an ephemeral loopback port."""
    server = FakeModelServer(model="qwen2.5-coder:1.5b-base")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def lsp(fake: FakeModelServer, tmp_path: Path) -> AsyncIterator[LanguageClient]:
    """A session with default settings (Ollama dialect) against ``fake``; debounce off for determinism."""
    client = await start_client(fake, root=tmp_path, env={"HAPA_COMPLETION_DEBOUNCE_MS": "0",
                                                          "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0"})
    try:
        yield client
    finally:
        await stop_client(client)


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    """didOpen a document."""
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def type_text(client: LanguageClient, uri: str, line: int, character: int, text: str, version: int) -> None:
    """didChange inserting ``text`` at a position (incremental sync)."""
    pos = types.Position(line, character)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=text)]))


def inline_params(uri: str, line: int, character: int, invoked: bool = False) -> types.InlineCompletionParams:
    """An inline completion request as VS Code sends it."""
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=kind),
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(line, character))
