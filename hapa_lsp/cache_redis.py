"""The optional shared cache level: Redis behind the in-process cache, bypassed while Redis is away.

Keys are ``<namespace>:cache:v<FORMAT>:<region>:<digest>`` so that a format change never reads an
old entry and several teams or tools can share one Redis; values are JSON, and values larger than
``hapa.redis.maxValueBytes`` stay in memory only. A Redis failure is logged once as E5002, the level
is bypassed (the server keeps working from memory) and tried again after ``RETRY_AFTER`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from hapa_lsp import errors
from hapa_lsp.cache import ResponseCache
from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.config import Settings

FORMAT = 1
RETRY_AFTER = 15.0
_TIMEOUT = 0.25


_IMPORT_LOCK = threading.Lock()


def load_redis() -> Any:
    """redis.asyncio, imported once under a lock (the startup warm-up imports it in a worker thread)."""
    with _IMPORT_LOCK:
        # deferred: optional, only with hapa.redis.url; every import goes through this lock
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff

        return redis


def make_cache(settings: Settings, on_error: Callable[[errors.HapaError], None] | None = None) -> ResponseCache:
    """The in-process cache, with the Redis level behind it when ``hapa.redis.url`` is set."""
    c = settings.cache
    ttl = c.ttl_seconds if c.enabled else 0
    if settings.redis.url and c.enabled:
        return TieredCache(ttl=ttl, maxsize=c.max_size, url=settings.redis.url, namespace=settings.redis.namespace,
                           max_value_bytes=settings.redis.max_value_bytes, on_error=on_error)
    return ResponseCache(ttl=ttl, maxsize=c.max_size)


class TieredCache(ResponseCache):
    """ResponseCache whose misses are looked up in Redis (``aget``) and whose stores are copied there."""

    def __init__(self, *, ttl: float, maxsize: int, url: str, namespace: str, max_value_bytes: int,
                 on_error: Callable[[errors.HapaError], None] | None = None):
        super().__init__(ttl=ttl, maxsize=maxsize)
        self._url = url
        self.prefix = f"{namespace}:cache:v{FORMAT}:"
        self.max_value_bytes = max_value_bytes
        self._on_error = on_error or (lambda e: None)
        self._client: Any = None
        self._down_until = 0.0
        self._reported = False
        self._tasks: set[asyncio.Task] = set()
        self.shared_hits = 0
        self.shared_errors = 0
        self.skipped_large = 0
        self.last_error: str | None = None

    # ---- Redis plumbing -----------------------------------------------------------------------------------
    def _redis(self) -> Any:
        if self._client is None:
            redis = load_redis()
            aredis, Retry, NoBackoff = redis.asyncio, redis.asyncio.retry.Retry, redis.backoff.NoBackoff
            # No client-side retries: one failure means "bypass", never a stalled keystroke.
            self._client = aredis.Redis.from_url(self._url, socket_timeout=_TIMEOUT,
                                                 socket_connect_timeout=_TIMEOUT, retry=Retry(NoBackoff(), 0),
                                                 health_check_interval=0)
        return self._client

    @property
    def status(self) -> str:
        """``ok`` or ``down`` (bypassed until it answers again)."""
        return "down" if self._down_until else "ok"

    def _usable(self) -> bool:
        return not self._down_until or time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self.shared_errors += 1
        self._down_until = time.monotonic() + RETRY_AFTER
        self.last_error = type(exc).__name__
        if not self._reported:
            self._reported = True
            self._on_error(errors.CacheUnavailable(f"Redis at the configured HAPA_REDIS_URL failed ({type(exc).__name__});"
                                            f" the shared cache is bypassed and retried in {RETRY_AFTER:g} s"))

    def _worked(self) -> None:
        if self._down_until:
            get_logger().info("shared cache back", backend="redis")
        self._down_until = 0.0
        self._reported = False
        self.last_error = None

    def _key(self, region: str, key: str) -> str:
        return f"{self.prefix}{region}:{key}"

    # ---- cache API ----------------------------------------------------------------------------------------
    async def aget(self, region: str, key: str) -> Any | None:
        """Memory first, then Redis (a Redis hit is kept in memory too); counts one hit or miss."""
        with self._lock:
            value = self.region(region).get(key)
        if value is None and self.ttl > 0 and self._usable():
            try:
                raw = await self._redis().get(self._key(region, key))
                self._worked()
            except Exception as exc:  # noqa: BLE001 - any Redis failure means bypass, never a failed request
                self._failed(exc)
                raw = None
            if raw is not None:
                try:
                    value = json.loads(raw)
                except ValueError:
                    value = None
                if value is not None:
                    self.shared_hits += 1
                    super().put(region, key, value)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, region: str, key: str, value: Any) -> None:
        """Store in memory, and copy to Redis in the background (when small enough)."""
        super().put(region, key, value)
        if value is None or self.ttl <= 0 or not self._usable():
            return
        data = json.dumps(value, separators=(",", ":"))
        if len(data.encode("utf-8")) > self.max_value_bytes:
            self.skipped_large += 1
            return
        self._spawn(self._set(self._key(region, key), data))

    async def _set(self, key: str, data: str) -> None:
        try:
            await self._redis().set(key, data, px=max(1, int(self.ttl * 1000)))
            self._worked()
        except Exception as exc:  # noqa: BLE001 - see aget
            self._failed(exc)

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()  # no loop (a synchronous caller): memory only
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def clear(self, region: str | None = None) -> int:
        """Drop one region (or all) from memory now and from Redis in the background."""
        n = super().clear(region)
        self._spawn(self.aclear_shared(region))
        return n

    async def aclear(self, region: str | None = None) -> tuple[int, int]:
        """Drop one region (or all) from memory and Redis; (memory entries, Redis keys) removed."""
        return ResponseCache.clear(self, region), await self.aclear_shared(region)

    async def aclear_shared(self, region: str | None = None) -> int:
        """Delete this namespace's entries of ``region`` (or all regions) from Redis; how many went."""
        if not self._usable():
            return 0
        pattern = self._key(region, "*") if region else f"{self.prefix}*"
        n = 0
        try:
            r = self._redis()
            batch: list[Any] = []
            async for k in r.scan_iter(match=pattern, count=500):
                batch.append(k)
                if len(batch) >= 500:
                    n += await r.delete(*batch)
                    batch = []
            if batch:
                n += await r.delete(*batch)
            self._worked()
        except Exception as exc:  # noqa: BLE001 - see aget
            self._failed(exc)
        return int(n)

    async def ping(self) -> str:
        """Check Redis now (for health): ``ok`` or ``down``."""
        try:
            await self._redis().ping()
            self._worked()
        except Exception as exc:  # noqa: BLE001 - see aget
            self._failed(exc)
        return self.status

    async def aflush(self) -> None:
        """Wait for background writes (tests and shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Finish writes and close the connection pool."""
        await self.aflush()
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._client = None

    def stats(self) -> dict[str, Any]:
        """The in-process figures plus the shared level's."""
        out = super().stats()
        out["shared"] = {"backend": "redis", "status": self.status, "hits": self.shared_hits,
                         "errors": self.shared_errors, "skipped_large": self.skipped_large,
                         "key_prefix": self.prefix, "last_error": self.last_error}
        return out
