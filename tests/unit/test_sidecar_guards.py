"""The sidecar's request guards without a server: refusal windows, Host and Origin rules."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hapa_lsp import errors
from hapa_lsp.sidecar import Refusals


class _Ops:
    metrics_on = False

    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []
        self.ls = SimpleNamespace(record_incident=lambda err, method: self.recorded.append((err.incident_id, method)))


def test_one_incident_per_reason_and_window():
    now = [100.0]
    ops: Any = _Ops()
    ref = Refusals(ops, clock=lambda: now[0])

    def make(inc: str | None) -> errors.HapaError:
        return errors.InputError("the X-API-Key does not match", code="E4003", incident_id=inc)

    first = [ref.refuse("api_key", "sidecar /x", make) for _ in range(500)]
    assert len(ops.recorded) == 1 and {e.incident_id for e in first} == {ops.recorded[0][0]}
    other = ref.refuse("rate_limit", "sidecar /x", make)  # each reason has its own window
    assert len(ops.recorded) == 2 and other.incident_id == ops.recorded[1][0]
    now[0] += Refusals.WINDOW - 0.1
    assert ref.refuse("api_key", "sidecar /x", make).incident_id == first[0].incident_id
    now[0] += 0.2
    later = ref.refuse("api_key", "sidecar /x", make)
    assert len(ops.recorded) == 3 and later.incident_id != first[0].incident_id
