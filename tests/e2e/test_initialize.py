"""initialize: the capabilities an editor relies on are advertised explicitly, and the server says it is ready."""

from __future__ import annotations

import asyncio
import sys

from lsprotocol import types
from pytest_lsp import ClientServerConfig

from tests.e2e.conftest import editor_capabilities, make_client, server_env, stop_client


async def test_initialize_advertises_inline_completion_and_completion(fake):
    client = await ClientServerConfig(server_command=[sys.executable, "-m", "hapa_lsp"], client_factory=make_client,
                                      server_env=server_env(fake)).start()
    try:
        result = await client.initialize_session(types.InitializeParams(capabilities=editor_capabilities()))
        caps = result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        assert "." in (caps.completion_provider.trigger_characters or [])
        assert caps.execute_command_provider is not None
        assert "hapa.didAcceptCompletion" in caps.execute_command_provider.commands
        sync = caps.text_document_sync
        assert getattr(sync, "change", sync) == types.TextDocumentSyncKind.Incremental
        assert result.server_info is not None and result.server_info.name == "hapa-lsp"
        for _ in range(100):
            if client.statuses:
                break
            await asyncio.sleep(0.02)
        assert client.statuses and client.statuses[0].state == "ok"
        assert "ready" in client.statuses[0].message
    finally:
        await stop_client(client)
