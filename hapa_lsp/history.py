"""History of generations and feedback on suggestions, over the SQLite ``Store`` (call from a worker thread)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from hapa_lsp import errors

if TYPE_CHECKING:
    from hapa_lsp.store import Store

_HISTORY_FIELDS = ("kind", "question", "uri", "language", "agent", "model", "prompt_tokens", "completion_tokens",
                   "latency_ms", "status", "generated_code", "explanation", "incident_id")
FEEDBACK_KINDS = ("shown", "accepted", "partial", "rating")


def record_generation(store: Store, *, profile: dict[str, Any] | None = None, **fields: Any) -> int:
    """Insert one generation (never credentials: only the fields named here are stored); returns its id."""
    unknown = set(fields) - set(_HISTORY_FIELDS)
    if unknown:
        raise ValueError(f"unknown history fields {sorted(unknown)}")
    cols = ["created_at", "profile", *fields]
    values = [time.time(), json.dumps(profile or {}, sort_keys=True), *fields.values()]
    return store.insert(f"INSERT INTO history ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)


def list_history(store: Store, *, page: int = 1, page_size: int = 20, uri: str | None = None,
                 agent: str | None = None, kind: str | None = None, status: str | None = None,
                 since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """One page of history, newest first, with the total matching the filters."""
    where: list[str] = []
    args: list[Any] = []
    for col, value in (("uri", uri), ("agent", agent), ("kind", kind), ("status", status)):
        if value is not None:
            where.append(f"{col} = ?")
            args.append(value)
    if since is not None:
        where.append("created_at >= ?")
        args.append(since)
    if until is not None:
        where.append("created_at < ?")
        args.append(until)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    total = store.execute(f"SELECT COUNT(*) FROM history{clause}", args)[0][0]
    rows = store.execute(f"SELECT * FROM history{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                         [*args, page_size, (page - 1) * page_size])
    items = []
    for r in rows:
        item = dict(r)
        try:
            item["profile"] = json.loads(item["profile"] or "{}")
        except ValueError:
            item["profile"] = {}
        item["history_id"] = item.pop("id")
        items.append(item)
    return {"items": items, "page": page, "page_size": page_size, "total": int(total),
            "pages": (int(total) + page_size - 1) // page_size}


def clear_history(store: Store, *, before: float | None = None) -> int:
    """Delete history rows (all, or those created before ``before``); their feedback goes with them."""
    cond, args = ("", []) if before is None else (" WHERE created_at < ?", [before])
    with store._lock:  # one transaction on the shared connection: feedback never points at deleted history
        store.execute("BEGIN IMMEDIATE")
        try:
            store.execute(f"DELETE FROM feedback WHERE history_id IN (SELECT id FROM history{cond})", args)
            n = store.execute(f"SELECT COUNT(*) FROM history{cond}", args)[0][0]
            store.execute(f"DELETE FROM history{cond}", args)
            store.execute("COMMIT")
        except BaseException:
            store.execute("ROLLBACK")
            raise
    return int(n)


def history_exists(store: Store, history_id: int) -> bool:
    """Whether a generation with this id is in the history."""
    return bool(store.execute("SELECT 1 FROM history WHERE id = ?", [history_id]))


def record_feedback(store: Store, kind: str, *, request_id: str = "", history_id: int | None = None,
                    uri: str = "", language: str = "", model: str = "", accepted_chars: int = 0,
                    shown_chars: int = 0, rating: int | None = None, comment: str = "") -> int:
    """Insert one feedback event (shown / accepted / partial / rating); returns its id."""
    if kind not in FEEDBACK_KINDS:
        raise errors.InvalidInput(f"feedback kind must be one of {', '.join(FEEDBACK_KINDS)}",
                                field="kind")
    return store.insert(
        "INSERT INTO feedback (created_at, kind, request_id, history_id, uri, language, model, accepted_chars, "
        "shown_chars, rating, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [time.time(), kind, request_id, history_id, uri, language, model, accepted_chars, shown_chars, rating,
         comment])


def _rates(rows: list[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, shown, accepted, partial in rows:
        shown, accepted, partial = int(shown or 0), int(accepted or 0), int(partial or 0)
        # A suggestion accepted without a recorded "shown" (an editor that does not report it) still counts as shown.
        seen = max(shown, accepted + partial)
        out[key or "unknown"] = {"shown": shown, "accepted": accepted, "partially_accepted": partial,
                                 "acceptance_rate": round((accepted + partial) / seen, 4) if seen else None}
    return out


def acceptance(store: Store, *, since: float | None = None) -> dict[str, Any]:
    """Acceptance of inline suggestions per model and per file type (language id), plus ratings."""
    clause, args = ("AND created_at >= ?", [since]) if since is not None else ("", [])
    agg = ("SUM(kind = 'shown'), SUM(kind = 'accepted'), SUM(kind = 'partial') FROM feedback "
           f"WHERE kind IN ('shown', 'accepted', 'partial') {clause}")
    by_model = store.execute(f"SELECT model, {agg} GROUP BY model ORDER BY model", args)
    by_type = store.execute(f"SELECT language, {agg} GROUP BY language ORDER BY language", args)
    total = store.execute(f"SELECT 'all', {agg}", args)
    ratings = store.execute(f"SELECT COUNT(rating), AVG(rating) FROM feedback WHERE kind = 'rating' {clause}", args)
    overall = _rates(total).get("all", {"shown": 0, "accepted": 0, "partially_accepted": 0, "acceptance_rate": None})
    n, avg = ratings[0]
    return {"overall": overall, "by_model": _rates(by_model), "by_file_type": _rates(by_type),
            "ratings": {"count": int(n or 0), "average": round(float(avg), 2) if avg is not None else None}}
