"""The shared Redis cache level against a real redis-server: sharing between servers, size cap, Redis dying."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisProcess, start_redis
from tests.e2e.conftest import open_doc, start_client, stop_client
from tests.e2e.test_sidecar import command, inline, ops_env, samples, sidecar_url, value
from tests.fakes.model_server import FakeModelServer

URI = "file:///ws/calc.py"
SOURCE = "def add(a, b):\n    \n"


def redis_env(tmp_path: Path, url: str, namespace: str, **extra: str) -> dict[str, str]:
    return ops_env(tmp_path, HAPA_REDIS_URL=url, HAPA_REDIS_NAMESPACE=namespace, **extra)


async def keys_eventually(r: redis.Redis, pattern: str, n: int, timeout: float = 5.0) -> list[bytes]:
    """The keys matching ``pattern`` once there are ``n`` (writes to Redis happen in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        keys = sorted(r.scan_iter(match=pattern))
        if len(keys) >= n or asyncio.get_running_loop().time() > deadline:
            return keys
        await asyncio.sleep(0.05)


async def test_two_servers_share_completions(fake: FakeModelServer, tmp_path: Path, redis_server: RedisProcess):
    ns = f"t{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_server.url)
    a = await start_client(fake, root=tmp_path, env=redis_env(tmp_path / "a", redis_server.url, ns))
    b = await start_client(fake, root=tmp_path, env=redis_env(tmp_path / "b", redis_server.url, ns))
    try:
        fake.queue("return a + b\n")
        open_doc(a, URI, SOURCE)
        assert (await inline(a, URI, 1, 4)).items[0].insert_text == "return a + b"
        keys = await keys_eventually(r, f"{ns}:*", 1)
        assert len(keys) == 1 and keys[0].decode().startswith(f"{ns}:cache:v1:completions:")
        assert json.loads(r.get(keys[0])) == "return a + b"
        assert 0 < r.pttl(keys[0]) <= 1800 * 1000  # the cache TTL applies in Redis too
        # A second developer's server answers the same context from Redis, without calling the model.
        open_doc(b, URI, SOURCE)
        assert (await inline(b, URI, 1, 4)).items[0].insert_text == "return a + b"
        assert fake.count() == 1
        stats = await command(b, "hapa.cache.stats")
        assert stats["shared"]["hits"] == 1 and stats["shared"]["status"] == "ok"
        health = await command(b, "hapa.health")
        assert health["services"]["redis"] == "ok" and health["status"] == "healthy"
        assert redis_server.url not in json.dumps(health)
        # Clearing removes the shared entries too.
        cleared = await command(b, "hapa.cache.clear", {"cache_type": "completions", "confirm": True})
        assert cleared["cleared"] == {"memory": 1, "shared": 1}
        assert list(r.scan_iter(match=f"{ns}:*")) == []
    finally:
        await stop_client(a)
        await stop_client(b)
        r.close()


async def test_large_values_stay_in_memory(fake: FakeModelServer, tmp_path: Path, redis_server: RedisProcess):
    ns = f"t{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_server.url)
    client = await start_client(fake, root=tmp_path, env=redis_env(tmp_path, redis_server.url, ns,
                                                                     HAPA_REDIS_MAX_VALUE_BYTES="64"))
    try:
        big = "total = a + b\n    total = total * 2\n    total = total - 1\n    return total\n"
        small = "return a - b\n"
        fake.queue(big, small)
        open_doc(client, URI, SOURCE)
        first = await inline(client, URI, 1, 4)
        assert len(json.dumps(first.items[0].insert_text)) > 64
        open_doc(client, "file:///ws/sub.py", "def sub(a, b):\n    \n")
        assert (await inline(client, "file:///ws/sub.py", 1, 4)).items[0].insert_text == "return a - b"
        keys = await keys_eventually(r, f"{ns}:*", 1)
        assert [json.loads(r.get(k)) for k in keys] == ["return a - b"]  # only the small one went to Redis
        again = await inline(client, URI, 1, 4)  # the big one is still served from memory
        assert again.items[0].insert_text == first.items[0].insert_text and fake.count() == 2
        assert (await command(client, "hapa.cache.stats"))["shared"]["skipped_large"] == 1
    finally:
        await stop_client(client)
        r.close()


async def test_redis_killed_mid_run_is_bypassed_once_reported(fake: FakeModelServer, tmp_path: Path):
    own: RedisProcess = start_redis()
    try:
        client = await start_client(fake, root=tmp_path, env=redis_env(tmp_path, own.url, "killed"))
        try:
            url = await sidecar_url(client)
            fake.queue("return a + b\n")
            open_doc(client, URI, SOURCE)
            assert (await inline(client, URI, 1, 4)).items[0].insert_text == "return a + b"
            r = redis.Redis.from_url(own.url)
            assert len(await keys_eventually(r, "killed:*", 1)) == 1
            r.close()

            own.kill()
            # Typing goes on: new contexts are answered by the model, old ones from memory.
            for n in range(4):
                open_doc(client, f"file:///ws/f{n}.py", f"def f{n}(x):\n    \n")
                fake.queue(f"return x * {n}\n")
                got = await inline(client, f"file:///ws/f{n}.py", 1, 4)
                assert got.items[0].insert_text == f"return x * {n}"
            assert (await inline(client, URI, 1, 4)).items[0].insert_text == "return a + b"
            assert fake.count() == 5

            health = await command(client, "hapa.health")
            assert health["services"]["redis"] == "down" and health["status"] == "degraded"
            dash = await command(client, "hapa.errors.dashboard")
            e5002 = [c for c in dash["top_error_codes"] if c["code"] == "E5002"]
            assert e5002 == [{"code": "E5002", "count": 1, "description": "Cache service error"}]  # logged once
            assert not [m for m in client.messages if "E5002" in getattr(m, "message", "")]  # and no popup
            async with httpx.AsyncClient(trust_env=False) as http:
                smp = samples((await http.get(f"{url}/metrics")).text)
                assert (await http.get(f"{url}/health")).json()["services"]["redis"] == "down"
            assert value(smp, "hapa_redis_up") == 0
            assert value(smp, "hapa_errors_total", code="E5002") == 1
        finally:
            await stop_client(client)
    finally:
        own.kill()


async def test_unreachable_redis_from_the_start(fake: FakeModelServer, tmp_path: Path):
    from tests.conftest import free_port

    client = await start_client(fake, root=tmp_path, env=redis_env(
        tmp_path, f"redis://127.0.0.1:{free_port()}/0", "none"))
    try:
        fake.queue("return a + b\n")
        open_doc(client, URI, SOURCE)
        assert (await inline(client, URI, 1, 4)).items[0].insert_text == "return a + b"
        assert (await inline(client, URI, 1, 4)).items[0].insert_text == "return a + b"
        assert fake.count() == 1  # the in-process level still works
        assert (await command(client, "hapa.health"))["services"]["redis"] == "down"
    finally:
        await stop_client(client)


@pytest.mark.parametrize("namespace", ["bad space", "x" * 65])
async def test_bad_namespace_is_reported(fake: FakeModelServer, tmp_path: Path, namespace: str):
    client = await start_client(fake, root=tmp_path, env=ops_env(tmp_path, HAPA_REDIS_NAMESPACE=namespace))
    try:
        await asyncio.sleep(0.2)
        assert any("hapa.redis.namespace" in getattr(m, "message", "") and "E4009" in m.message
                   for m in client.messages)
    finally:
        await stop_client(client)
