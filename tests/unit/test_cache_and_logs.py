"""The TTL+LRU cache and the log redaction (no API key or Authorization header in any log line)."""

from __future__ import annotations

import json
import logging

from hapa_lsp import log
from hapa_lsp.cache import ResponseCache, digest


def test_cache_hits_misses_regions_and_lru_eviction():
    c = ResponseCache(ttl=60, maxsize=2)
    assert c.get("completions", "a") is None
    c.put("completions", "a", "A")
    c.put("completions", "b", "B")
    assert c.get("completions", "a") == "A"  # a is now most recently used
    c.put("completions", "c", "C")  # evicts b
    assert c.get("completions", "b") is None and c.get("completions", "c") == "C"
    c.put("code_generation", "x", {"code": 1})
    assert c.stats()["regions"] == {"completions": 2, "code_generation": 1}
    assert c.clear("completions") == 2 and c.stats()["regions"]["code_generation"] == 1
    assert c.hits == 2 and c.misses == 2


def test_cache_ttl_expires():
    now = [1000.0]
    c = ResponseCache(ttl=10, maxsize=10, timer=lambda: now[0])
    c.put("completions", "k", "v")
    now[0] += 11
    assert c.get("completions", "k") is None


def test_digest_is_stable_and_separates_parts():
    assert digest("ab", "c") != digest("a", "bc")
    assert digest("x", 1) == digest("x", 1)


def test_logs_never_contain_api_keys_or_authorization(tmp_path):
    path = tmp_path / "hapa.log"
    log.configure("DEBUG", str(path), "json")
    log.register_secret("sk-live-abcdef123456")
    logger = log.get_logger("test")
    logger.info("calling model", api_key="sk-live-abcdef123456", headers={"Authorization": "Bearer sk-live-abcdef123456"},
                url="http://x", note="key is sk-live-abcdef123456")
    logging.getLogger("httpx").warning("HTTP Request with Authorization: Bearer tok-999999 failed")
    for h in logging.getLogger().handlers:
        h.flush()
    text = path.read_text()
    assert "sk-live-abcdef123456" not in text and "tok-999999" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    event = next(e for e in lines if e.get("event") == "calling model")
    assert event["api_key"] == "****" and event["url"] == "http://x"
    log.configure("WARNING", "", "console")


def test_logs_go_to_stderr_not_stdout(capsys):
    log.configure("INFO", "", "console")
    log.get_logger("t").warning("to stderr")
    out = capsys.readouterr()
    assert "to stderr" in out.err and out.out == ""
