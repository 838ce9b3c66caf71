"""The sidecar's request guards without a server: refusal windows, Host and Origin rules."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hapa_lsp import errors
from hapa_lsp.ops.sidecar import Refusals


class _Ops:
    metrics_on = False

    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []
        self.ls = SimpleNamespace(record_incident=lambda err, method: self.recorded.append((err.incident_id, method)),
                                  rate_limiter=SimpleNamespace(check=lambda feature: None))


def test_one_incident_per_reason_and_window():
    now = [100.0]
    ops: Any = _Ops()
    ref = Refusals(ops, clock=lambda: now[0])

    def make(inc: str | None) -> errors.HapaError:
        return errors.InvalidApiKey("the X-API-Key does not match", incident_id=inc)

    first = [ref.refuse("api_key", "sidecar /x", make) for _ in range(500)]
    assert len(ops.recorded) == 1 and {e.incident_id for e in first} == {ops.recorded[0][0]}
    other = ref.refuse("rate_limit", "sidecar /x", make)  # each reason has its own window
    assert len(ops.recorded) == 2 and other.incident_id == ops.recorded[1][0]
    now[0] += Refusals.WINDOW - 0.1
    assert ref.refuse("api_key", "sidecar /x", make).incident_id == first[0].incident_id
    now[0] += 0.2
    later = ref.refuse("api_key", "sidecar /x", make)
    assert len(ops.recorded) == 3 and later.incident_id != first[0].incident_id


def test_host_of_parses_host_headers():
    from hapa_lsp.ops.sidecar import host_of

    assert host_of("LocalHost:7438") == "localhost"
    assert host_of("[::1]:7438") == "::1"
    assert host_of("[::1]") == "::1"
    assert host_of("127.0.0.1") == "127.0.0.1"
    assert host_of("example.com.:80") == "example.com"


def test_host_policy_loopback_bind_accepts_only_loopback_and_listed_names():
    from hapa_lsp.ops.sidecar import HostPolicy

    p = HostPolicy("127.0.0.1", ["Dash.Lan"])
    for ok in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "dash.lan"):
        assert p.allows(ok), ok
    for bad in ("evil.example", "localhost.evil.example", "192.168.1.5", "0.0.0.0", ""):
        assert not p.allows(bad), bad


def test_host_policy_named_and_wildcard_binds():
    from hapa_lsp.ops.sidecar import HostPolicy

    named = HostPolicy("build-box.lan")
    assert named.allows("build-box.lan") and named.allows("localhost")
    assert not named.allows("evil.example") and not named.allows("10.1.2.3")
    wild = HostPolicy("0.0.0.0")
    assert wild.allows("10.1.2.3") and wild.allows("fe80::1") and wild.allows("localhost")
    assert not wild.allows("evil.example")  # a rebinding attack needs a name


async def test_requests_are_judged_by_the_settings_the_sidecar_started_with():
    """Between a settings change and the restart that re-checks the loopback-or-key rule, a key the change
    cleared is still required."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from hapa_lsp.config import SidecarSettings
    from hapa_lsp.ops.sidecar import Sidecar

    ops: Any = _Ops()
    ops.ls.settings = SimpleNamespace(sidecar=SidecarSettings(host="0.0.0.0", api_key=""))  # the live settings
    sc = Sidecar(ops)
    sc.settings = SidecarSettings(host="0.0.0.0", api_key="started-with-key")
    sc.port = 7438

    async def handler(request: Any) -> web.Response:
        return web.Response(text="data")

    resp = await sc._guard_impl(make_mocked_request("GET", "/errors/dashboard", headers={"Host": "127.0.0.1:7438"}),
                                handler)
    assert resp.status == 401
    ok = await sc._guard_impl(make_mocked_request("GET", "/errors/dashboard", headers={
        "Host": "127.0.0.1:7438", "X-API-Key": "started-with-key"}), handler)
    assert ok.status == 200
