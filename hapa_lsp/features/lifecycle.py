"""Lifecycle: initialize (settings from initializationOptions), configuration pulls, document events."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.uris import to_fs_path

from hapa_lsp import jedi_spawn
from hapa_lsp.documents import doc_key, find_open, fs_path, name_of
from hapa_lsp.features.common import language_of
from hapa_lsp.log import get_logger, register_secrets_in
from hapa_lsp.protocol import client_supports, install_fast_documents

# hapa_lsp.config.SECTION, spelled out so the settings tree is built after the initialize response.
SECTION = "hapa"

if TYPE_CHECKING:
    from hapa_lsp.jedi_client import JediRunner
    from hapa_lsp.server import HapaServer


async def pull_configuration(ls: HapaServer) -> None:
    """Read section ``hapa`` with workspace/configuration and apply it."""
    try:
        result = await ls.ask_client(types.WORKSPACE_CONFIGURATION,
                                     types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)]))
    except Exception as exc:  # noqa: BLE001 - a client that fails or ignores this request keeps the other layers
        get_logger().warning("workspace/configuration failed", error=type(exc).__name__)
        return
    value = result[0] if result else None
    register_secrets_in(value)  # before anything can log it (pygls logs the answer itself, masked by name)
    ls.apply_settings(workspace=value if value is not None else {})


async def _register_configuration(ls: HapaServer) -> None:
    """Ask to be told about configuration changes (a convenience: without it they come when the client sends them)."""
    try:
        await ls.ask_client(types.CLIENT_REGISTER_CAPABILITY, types.RegistrationParams(registrations=[
            types.Registration(id="hapa-config", method=types.WORKSPACE_DID_CHANGE_CONFIGURATION,
                               register_options={"section": SECTION})]))
    except Exception:  # noqa: BLE001 - registration is not a requirement (ClientSilent included)
        get_logger().warning("client/registerCapability got no answer; configuration changes are read when the "
                             "client announces them")


def register(server: HapaServer) -> None:
    """Register lifecycle and document-event handlers."""

    @server.feature(types.INITIALIZE)
    def initialize(ls: HapaServer, params: types.InitializeParams) -> None:
        # Keys in the raw options are masked from here on, also where a line shows them without their name.
        register_secrets_in(params.initialization_options)
        install_fast_documents(ls.workspace)  # pygls creates the workspace just before calling this handler
        folders = params.workspace_folders or []
        if folders:
            ls.root_path = to_fs_path(folders[0].uri)
        elif params.root_uri:
            ls.root_path = to_fs_path(params.root_uri)
        # Settings are applied in `initialized`: building and validating the tree is not worth
        # keeping the editor waiting for the initialize response.
        ls.init_options = params.initialization_options

    @server.feature(types.INITIALIZED)
    async def initialized(ls: HapaServer, params: types.InitializedParams) -> None:
        ls.apply_settings()
        # Warm up what the first keystroke needs, off the event loop, now that the editor is not waiting.
        warm = ls.keep(asyncio.ensure_future(_warm_up(ls)))
        if ls.settings.completion.jedi or ls.settings.context.facts:
            ls.keep(ls.jedi.warm_up())
        else:
            jedi_spawn.discard()  # started with the process, before the settings were known
        # The sidecar and incident pruning start once the typing path is warm (their imports, aiohttp and
        # prometheus_client, would otherwise compete with it for the one interpreter lock while the user's first
        # keystrokes arrive), with the settings known then; the client's configuration is applied whenever it
        # arrives (a client that never answers must not delay them).
        ls.keep(asyncio.ensure_future(_after_warm_up(
            ls, warm, ls.jedi if ls.settings.completion.jedi or ls.settings.context.facts else None)))
        if client_supports(ls, "workspace.did_change_configuration.dynamic_registration"):
            # Alongside the configuration pull, not before it: a client that never answers costs one timeout.
            ls.keep(asyncio.ensure_future(_register_configuration(ls)))
        if client_supports(ls, "workspace.configuration"):
            await pull_configuration(ls)
        if ls.status_state == "ok":  # a failure reported meanwhile must not be covered up by "ready"
            ls.set_status("ok", f"hapa-lsp {ls.version} ready ({ls.settings.backend.kind} "
                          f"{ls.settings.backend.completion_model})", force=True)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: HapaServer, params: types.DidChangeConfigurationParams) -> None:
        if client_supports(ls, "workspace.configuration"):
            await pull_configuration(ls)
        else:
            settings: Any = params.settings
            register_secrets_in(settings)
            if isinstance(settings, dict):
                ls.apply_settings(workspace=settings.get(SECTION, settings))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: HapaServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = find_open(ls.workspace, params.text_document.uri)
        if doc is not None:
            ls.engine.did_open(doc_key(doc.uri), name_of(doc), language_of(doc), doc.source,
                               on_disk=fs_path(doc) is not None)
            for obs in ls.document_observers:
                obs.did_open(doc)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: HapaServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.engine.did_change(doc_key(params.text_document.uri), params.content_changes)
        if ls.document_observers:
            doc = find_open(ls.workspace, params.text_document.uri)
            if doc is not None:
                for obs in ls.document_observers:
                    obs.did_change(doc, params.content_changes)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: HapaServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.engine.did_close(doc_key(params.text_document.uri))
        for obs in ls.document_observers:
            obs.did_close(doc_key(params.text_document.uri))

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: HapaServer, *args: Any) -> None:
        await ls.close()  # history rows still being written, then the services


# Background start-up work waits for a pause this long in the user's typing, but no longer than the bound.
STARTUP_PAUSE_S = 0.3
STARTUP_PAUSE_MAX_S = 3.0


async def _after_warm_up(ls: HapaServer, warm: asyncio.Future[Any], jedi: JediRunner | None = None) -> None:
    """Run the startup hooks once the typing path is warm, ``jedi``'s worker has started and the user pauses
    (bounded: ``STARTUP_PAUSE_MAX_S`` after the warm-up)."""
    await asyncio.wait([warm])
    until = time.monotonic() + STARTUP_PAUSE_MAX_S
    if jedi is not None:
        # On a parse cache this machine never filled, the jedi worker and its helper need both cores for ~2 s
        # (the first completion list waits for them); the hooks' imports would take one of them.
        await jedi.wait_started(max(0.0, until - time.monotonic()))
    while time.monotonic() < until:
        idle = time.monotonic() - ls.protocol.last_typing_at
        if idle >= STARTUP_PAUSE_S:
            break
        await asyncio.sleep(min(STARTUP_PAUSE_S - idle, until - time.monotonic()) + 0.001)
    await ls.run_startup_hooks()


async def _warm_up(ls: HapaServer) -> None:
    """Import the typing path's modules in a worker thread (~0.1-0.2 s on a loaded machine: httpx, the engine, the
    context builder), then build the engine on the loop, cheaply now, and its pooled HTTP client in the thread."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    try:
        await loop.run_in_executor(None, _import_typing_path)
        t1 = time.perf_counter()
        engine = ls.engine
        await loop.run_in_executor(None, engine.prepare)
        ls.rate_limiter.prepare()  # on the loop, which owns the limiter: ~1-2 ms of rule parsing
        get_logger().debug("typing path warm", import_ms=round((t1 - t0) * 1000, 1),
                           prepare_ms=round((time.perf_counter() - t1) * 1000, 1))
    except Exception:  # noqa: BLE001 - e.g. the editor quit while we were importing; first use imports again
        get_logger().debug("warm-up failed", exc_info=True)
    finally:
        ls.engine.typing_path_ready.set()


def _import_typing_path() -> None:
    # deferred on purpose: this warm-up imports, in a worker thread after initialize, what start-up must not
    # (tests/unit/test_startup.py)
    import httpx  # noqa: F401
    import structlog  # noqa: F401

    import hapa_lsp.backends.ollama  # noqa: F401
    import hapa_lsp.backends.openai  # noqa: F401
    import hapa_lsp.engine  # noqa: F401
    import hapa_lsp.prompts  # noqa: F401
    import hapa_lsp.upstream  # noqa: F401
    from hapa_lsp.ops.ratelimit import load_limits

    load_limits()  # `import limits` costs 50-130 ms
