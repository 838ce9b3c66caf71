"""`hapa-lsp generate --json` always prints one JSON object, also when the generation fails."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import server_env
from tests.fakes.model_server import FakeModelServer


def _generate(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hapa_lsp", "generate", "--json", "add two numbers"],
                          env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_rejected_generation_prints_an_object_with_the_code():
    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:7b-instruct")
    try:
        fake.script(lambda record: "this is not python (")  # fails validation, and again after the repair
        out = _generate(server_env(fake))
    finally:
        fake.close()
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert body["status"] == "error" and body["code"] == "E4011"
    assert body["generated_code"] == "this is not python ("
    assert body["validation"] is not None
    assert body["incident_id"] in out.stderr


def test_an_unreachable_model_prints_an_object_with_the_code():
    fake = FakeModelServer.run_in_thread(model="qwen2.5-coder:7b-instruct")
    url = fake.url
    fake.close()  # nothing listens there any more
    out = _generate(server_env(None, {"HAPA_BACKEND_ENDPOINT": url, "HAPA_RESILIENCE_RETRIES": "0"}))
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert body["status"] == "error" and body["code"] == "E5005" and body["error"]["retryable"] is True
