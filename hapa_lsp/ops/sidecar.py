"""The sidecar HTTP endpoint (aiohttp, in the server's own event loop): metrics, health, JSON and HTML dashboards.

Loopback by default. When ``hapa.sidecar.apiKey`` (HAPA_SIDECAR_API_KEY) is set, every endpoint
except /health and /metrics wants it in ``X-API-Key`` (compared in constant time); binding anything
but loopback without a key is refused. Every request must address the sidecar by a loopback name, the
bind host or one of ``hapa.sidecar.allowedHosts`` (421 otherwise: DNS rebinding), and a request from a
browser page must come from the sidecar's own origin (403 otherwise). The /dashboard page itself carries no data: it is served to
anyone and sends the key (taken from ``#key=...`` in its URL, which browsers never send to a server,
or asked for) with each data request. A port in use is skipped for the next one, so several editor
windows can each run a server.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hapa_lsp import errors
from hapa_lsp.log import get_logger

# aiohttp is imported where it is used (deferred): config imports this module for is_loopback on every start,
# and aiohttp is needed only once the sidecar runs (hapa.sidecar.enabled).
if TYPE_CHECKING:
    from aiohttp import web

    from hapa_lsp.ops.service import Ops

PORT_ATTEMPTS = 20
OPEN_PATHS = frozenset({"/health", "/metrics", "/dashboard", "/"})
_LIMITED = {"/errors/dashboard": "hapa.errors.dashboard", "/errors/patterns": "hapa.errors.patterns",
            "/analytics/performance": "hapa.analytics.performance"}


#: Bind addresses that listen on every interface.
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback", "localhost.localdomain"})


def host_of(authority: str) -> str:
    """The host of a Host header or URL authority (``host``, ``host:port``, ``[v6]:port``): lower case, without
    port, brackets or final dot."""
    v = authority.strip().lower()
    if v.startswith("["):
        v = v[1:v.find("]")] if "]" in v else v[1:]
    elif v.count(":") == 1:
        v = v.partition(":")[0]
    return v.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which names a request may address the sidecar by (the Host header), against DNS rebinding: a page of
    evil.example whose name is made to resolve to 127.0.0.1 reaches the port with ``Host: evil.example``.

    Accepted: loopback names and addresses, the bind host, ``hapa.sidecar.allowedHosts``; on a wildcard bind
    (0.0.0.0, ::) also any IP address, since rebinding needs a name the attacker controls. Any port."""

    def __init__(self, bind_host: str, allowed: Any = ()):
        bind = host_of(bind_host)
        self.wildcard = bind in WILDCARD_BINDS
        self.names = frozenset({host_of(h) for h in allowed if h} | ({bind} if not self.wildcard else set()))

    def allows(self, name: str) -> bool:
        """Whether a request addressed to ``name`` (already through ``host_of``) is served."""
        if name in LOOPBACK_NAMES or name in self.names or is_loopback(name):
            return True
        return self.wildcard and _is_ip(name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    from aiohttp import web  # deferred: see the note above TYPE_CHECKING

    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


def plain_error(code: str, detail: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    """A catalog error that is not an incident (a path that does not exist, a method it does not take)."""
    spec = errors.CATALOG[code]
    return _json({"error": {"code": code, "title": spec.title, "detail": detail, "remedy": spec.remedy,
                            "retryable": spec.retryable}}, status, headers)


class Refusals:
    """Requests refused before any handler ran (a wrong API key, an exceeded limit): counted per reason in
    ``hapa_sidecar_refused_total``, and one incident plus one log line per reason and window instead of one
    per request, so a scan or a brute-force loop cannot fill the incident table or the log. Every answer in a
    window carries the incident id that stands for all of them."""

    WINDOW = 60.0

    def __init__(self, ops: Ops, clock: Callable[[], float] = time.monotonic):
        self.ops = ops
        self._clock = clock
        #: reason -> [window start, incident id, refusals in the window]
        self._windows: dict[str, list[Any]] = {}

    def refuse(self, reason: str, method: str, make: Callable[[str | None], errors.HapaError]) -> errors.HapaError:
        """Count one refusal; the error to answer with (a new incident once per window)."""
        if self.ops.metrics_on:
            self.ops.telemetry.sidecar_refused.labels(reason).inc()
        now = self._clock()
        win = self._windows.get(reason)
        if win is not None and now - win[0] < self.WINDOW:
            win[2] += 1
            return make(win[1])
        err = make(None)
        self.ops.ls.record_incident(err, method)
        get_logger("hapa_lsp.ops.sidecar").warning(
            "sidecar requests refused", reason=reason, code=err.code, incident_id=err.incident_id,
            refused_in_previous_window=win[2] if win is not None else 0, window_seconds=self.WINDOW)
        self._windows[reason] = [now, err.incident_id, 1]
        return err


def error_response(err: errors.HapaError, status: int | None = None) -> web.Response:
    """A catalog error as the sidecar's JSON answer, with a fitting HTTP status."""
    if status is None:
        status = {"E4003": 401, "E4004": 429, "E4005": 403}.get(err.code, 400 if err.code.startswith("E4") else 503)
        if err.code == "E5004":
            status = 500
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} if err.retry_after else None
    return _json({"error": err.to_data()}, status, headers)


class Sidecar:
    """One aiohttp site bound to the first free port from the configured one."""

    def __init__(self, ops: Ops):
        self.ops = ops
        self._runner: Any = None
        self.url: str | None = None
        self.port: int | None = None
        self.refused: str | None = None
        self._page: bytes | None = None
        self.refusals = Refusals(ops)
        self.hosts = HostPolicy("127.0.0.1")
        #: The settings this site was started with: the loopback-or-key rule was checked against exactly these, so
        #: requests are judged by them until a restart checks new ones (never by a key a later change cleared).
        self.settings: Any = None

    async def start(self) -> str | None:
        """Bind and serve; returns the URL, or None when the settings forbid starting (logged and shown)."""
        from aiohttp import web  # deferred: see the note above TYPE_CHECKING

        log = get_logger("hapa_lsp.ops.sidecar")
        s = self.ops.ls.settings.sidecar
        if not is_loopback(s.host) and not s.api_key:
            self.refused = (f"the sidecar is not started: binding {s.host} (not loopback) requires "
                            f"HAPA_SIDECAR_API_KEY (hapa.sidecar.apiKey)")
            log.error("sidecar refused", host=s.host, reason="non-loopback bind without an API key")
            return None
        self.settings = s
        self.hosts = HostPolicy(s.host, s.allowed_hosts)

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._guard_impl(request, handler)

        app = web.Application(middlewares=[guard])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/errors/dashboard", self.errors_dashboard)
        app.router.add_get("/errors/patterns", self.errors_patterns)
        app.router.add_get("/errors/{incident_id}", self.errors_get)
        app.router.add_get("/analytics/performance", self.performance)
        app.router.add_get("/dashboard", self.dashboard)
        app.router.add_get("/", self.index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        ports = [0] if s.port == 0 else [p for p in range(s.port, s.port + PORT_ATTEMPTS) if p <= 65535]
        last: OSError | None = None
        for port in ports:
            site = web.TCPSite(runner, s.host, port, reuse_address=False)
            try:
                await site.start()
            except OSError as exc:
                last = exc
                await site.stop()  # unregister the failed site from the runner
                log.warning("sidecar port in use, trying the next one", host=s.host, port=port,
                            error=type(exc).__name__)
                continue
            self.port = int(runner.addresses[0][1])  # the real port, also when 0 asked for any
            host = f"[{s.host}]" if ":" in s.host else s.host
            self.url = f"http://{host}:{self.port}"
            self._runner = runner
            log.info("sidecar listening", url=self.url, auth="api key" if s.api_key else "none")
            return self.url
        await runner.cleanup()
        self.refused = f"the sidecar found no free port in {ports[0]}..{ports[-1]} ({type(last).__name__})"
        log.error("sidecar not started", reason=self.refused)
        return None

    async def stop(self) -> None:
        """Close the site."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- middleware -----------------------------------------------------------------------------------------
    def _origin_allowed(self, origin: str) -> bool:
        """An Origin header names the page that sent the request: only the sidecar's own pages (the dashboard),
        addressed by an accepted name, on this port."""
        try:
            u = urlsplit(origin)
            port = u.port or 80
        except ValueError:
            return False
        return u.scheme == "http" and bool(u.hostname) and self.hosts.allows(host_of(u.hostname)) and port == self.port

    async def _guard_impl(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # Host first, for every path (/health and /metrics too): a foreign name is DNS rebinding or a mistake.
        # A request without Host comes from no browser and is judged by the rest.
        host = request.headers.get("Host")
        if host is not None and not self.hosts.allows(host_of(host)):
            shown = host_of(host)[:80]
            return error_response(self.refusals.refuse("host", "sidecar host check", lambda inc: errors.PermissionDenied(
                f"requests addressed to {shown!r} are not served: only loopback names, the bind host and "
                f"hapa.sidecar.allowedHosts are (DNS rebinding protection)", field="Host",
                incident_id=inc)), status=421)
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            shown = origin[:80]
            return error_response(self.refusals.refuse("origin", "sidecar origin check", lambda inc: errors.PermissionDenied(
                f"cross-origin requests are not served (Origin {shown!r}); open the dashboard from the sidecar "
                f"itself", field="Origin", incident_id=inc)))
        # A path or method we do not serve is answered by what it is, without an incident: a browser asking
        # for /favicon.ico or a port scanner is no failure of ours.
        miss = getattr(request.match_info, "http_exception", None)
        if miss is not None:
            if miss.status == 405:
                allow = ", ".join(sorted(getattr(miss, "allowed_methods", ()) or ("GET", "HEAD")))
                return plain_error("E4001", f"{request.method} is not allowed on {request.path}; use {allow}", 405,
                                   {"Allow": allow})
            return plain_error("E4001", f"no endpoint {request.path}; GET / lists them", 404)
        where = f"sidecar {request.path}"
        key = self.settings.api_key
        if key and request.path not in OPEN_PATHS:
            given = request.headers.get("X-API-Key", "")
            # compare_digest on bytes of equal meaning: constant time whatever the length or content.
            if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
                detail = "missing X-API-Key header" if not given else "the X-API-Key does not match"
                return error_response(self.refusals.refuse("api_key", where, lambda inc: errors.InvalidApiKey(
                    detail, field="X-API-Key", incident_id=inc)))
        feature = _LIMITED.get(request.path)
        if feature is not None:
            try:
                self.ops.ls.rate_limiter.check(feature)
            except errors.HapaError as limited:
                return error_response(self.refusals.refuse("rate_limit", where, lambda inc, lim=limited: type(lim)(
                    lim.detail, field=lim.field, retry_after=lim.retry_after, incident_id=inc)))
        try:
            return await handler(request)
        except errors.HapaError as err:
            self.ops.ls.record_incident(err, f"sidecar {request.path}")
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug answers E5004, the sidecar keeps serving
            err = errors.as_hapa_error(exc)
            get_logger("hapa_lsp.ops.sidecar").exception("sidecar handler failed", incident_id=err.incident_id)
            self.ops.ls.record_incident(err, f"sidecar {request.path}")
            return error_response(err)


    # ---- endpoints ------------------------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition."""
        from aiohttp import web  # deferred: see the note above TYPE_CHECKING

        body = self.ops.metrics_text()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def health(self, request: web.Request) -> web.Response:
        """status, version, uptime, services{database, redis, ai_model}, last_cleanup."""
        return _json(await self.ops.health())

    async def errors_dashboard(self, request: web.Request) -> web.Response:
        """The error dashboard JSON."""
        return _json(await self.ops.errors_dashboard())

    async def errors_patterns(self, request: web.Request) -> web.Response:
        """Error patterns over ``?period=`` 1h / 24h / 7d (default) / 30d."""
        return _json(await self.ops.errors_patterns(request.query.get("period", "7d")))

    async def errors_get(self, request: web.Request) -> web.Response:
        """One incident; 404 (not an incident itself) for an id that is malformed or not stored."""
        try:
            return _json(await self.ops.incident(request.match_info["incident_id"]))
        except errors.InputError as exc:
            if exc.field != "incident_id":
                raise
            return plain_error(exc.code, exc.detail, 404)

    async def performance(self, request: web.Request) -> web.Response:
        """Performance analytics JSON."""
        return _json(self.ops.performance())

    async def dashboard(self, request: web.Request) -> web.Response:
        """The self-contained HTML dashboard."""
        from aiohttp import web  # deferred: see the note above TYPE_CHECKING

        if self._page is None:
            self._page = files("hapa_lsp.ops").joinpath("dashboard.html").read_bytes()
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                                "style-src 'unsafe-inline'; img-src data:"})

    async def index(self, request: web.Request) -> web.Response:
        """The list of endpoints."""
        return _json({"service": "hapa-lsp sidecar", "endpoints": ["/health", "/metrics", "/errors/dashboard",
                                                                   "/errors/patterns?period=7d",
                                                                   "/errors/{incident_id}",
                                                                   "/analytics/performance", "/dashboard"]})
