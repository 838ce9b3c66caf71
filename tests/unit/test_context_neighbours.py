"""Neighbour snippets: other open / recently edited documents ranked by identifier overlap (Jaccard)."""

from __future__ import annotations

from hapa_lsp.context.neighbours import NeighbourIndex, identifiers

BILLING = "\n".join(["def charge_customer(customer_id, amount_cents, currency):",
                     "    gateway = PaymentGateway(api_key)",
                     "    receipt = gateway.charge(customer_id, amount_cents, currency)",
                     "    return receipt"] + ["# filler"] * 30)
WEATHER = "\n".join(["def forecast(city):", "    return fetch_weather(city).temperature"] + ["# more"] * 30)


def test_most_similar_chunk_first_and_own_document_skipped():
    idx = NeighbourIndex()
    idx.update("file:///billing.py", "/w/billing.py", 1, BILLING)
    idx.update("file:///weather.py", "/w/weather.py", 1, WEATHER)
    idx.update("file:///cur.py", "/w/cur.py", 1, "gateway.charge(customer_id, amount_cents)")
    got = idx.search("receipt = gateway.charge(customer_id, amount_cents", exclude_uri="file:///cur.py", limit=2)
    assert [s.path for s in got] == ["/w/billing.py"]
    assert "PaymentGateway" in got[0].text and got[0].score > 0.2


def test_excluded_documents_are_never_indexed():
    idx = NeighbourIndex((".env*", "**/secrets/**"))
    idx.update("file:///w/secrets/keys.py", "/w/secrets/keys.py", 1, BILLING)
    idx.update("file:///w/.env", "/w/.env", 1, "customer_id amount_cents currency gateway")
    assert idx.search("gateway.charge(customer_id, amount_cents, currency)") == []


def test_closed_documents_stay_as_recently_edited():
    idx = NeighbourIndex()
    idx.sync([("file:///billing.py", "/w/billing.py", 1, BILLING)])
    idx.sync([])  # closed in the editor: still a neighbour for a while
    assert idx.search("gateway.charge(customer_id, amount_cents)")[0].path == "/w/billing.py"


def test_new_version_is_reindexed():
    idx = NeighbourIndex()
    idx.update("u", "/w/a.py", 1, WEATHER)
    idx.update("u", "/w/a.py", 2, BILLING)
    assert idx.search("gateway.charge(customer_id)")[0].text.startswith("def charge_customer")


def test_identifiers_ignore_keywords_and_short_names():
    assert identifiers("def f(self, customer_id): return x") == frozenset({"customer_id"})
