"""The in-process suggestion cache: cachetools TTL + LRU, keyed by a digest of the exact prompt inputs."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from cachetools import TTLCache


def digest(*parts: Any) -> str:
    """A short stable key for the parts (strings hashed, not stored, to keep memory flat)."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        b = p.encode("utf-8", "surrogatepass") if isinstance(p, str) else repr(p).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class ResponseCache:
    """Named TTL+LRU regions (``completions``, ``code_generation``, ...) with hit/miss counts."""

    def __init__(self, ttl: float = 1800.0, maxsize: int = 1000, timer: Any = None):
        self._timer = timer or time.monotonic
        self.ttl = ttl
        self.maxsize = maxsize
        self._regions: dict[str, TTLCache] = {}
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def region(self, name: str) -> TTLCache:
        """The cache region called ``name`` (created on first use)."""
        r = self._regions.get(name)
        if r is None:
            with self._lock:
                r = self._regions.setdefault(name, TTLCache(maxsize=self.maxsize, ttl=self.ttl,
                                                                  timer=self._timer))
        return r

    def get(self, region: str, key: str) -> Any | None:
        """The cached value or None; counts the hit or miss."""
        with self._lock:
            value = self.region(region).get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def aget(self, region: str, key: str) -> Any | None:
        """``get`` for callers on the event loop; a shared level (hapa_lsp.cache_redis) may await here."""
        return self.get(region, key)

    def put(self, region: str, key: str, value: Any) -> None:
        """Store ``value`` (never None) under ``key``."""
        if value is None or self.ttl <= 0:
            return
        with self._lock:
            self.region(region)[key] = value

    def clear(self, region: str | None = None) -> int:
        """Drop one region, or all; returns how many entries went."""
        with self._lock:
            names = [region] if region else list(self._regions)
            n = 0
            for name in names:
                r = self._regions.get(name)
                if r is not None:
                    n += len(r)
                    r.clear()
            return n

    def stats(self) -> dict[str, Any]:
        """Sizes and hit rate."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / total, 4) if total else 0.0,
            "regions": {name: len(r) for name, r in self._regions.items()},
            "ttl_seconds": self.ttl,
            "max_size": self.maxsize,
        }
