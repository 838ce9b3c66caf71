"""The command line: --version, doctor (masked settings, one line per problem, exit status), log files."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import server_env


def run(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hapa_lsp", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_version():
    out = run(["--version"], server_env(None))
    assert out.returncode == 0 and out.stdout.startswith("hapa-lsp ")


async def test_doctor_reports_a_healthy_setup_with_secrets_masked(fake):
    fake.models = ["qwen2.5-coder:1.5b-base", "qwen2.5-coder:7b-instruct"]
    env = server_env(fake, {"AI_MODEL_API_KEY": "sk-doctor-secret-9876"})
    out = await _run_async(["doctor"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sk-doctor-secret-9876" not in out.stdout + out.stderr
    assert "hapa.backend.apiKey = \"****76\"" in out.stdout
    assert f"hapa.backend.endpoint = \"{fake.url}\"" in out.stdout
    assert "OK" in out.stdout and "no problems found" in out.stdout


async def test_doctor_names_each_problem_and_fails_when_the_model_is_unusable(fake):
    fake.models = ["llama3:8b"]
    env = server_env(fake, {"HAPA_BACKEND_MAX_TOKENS": "-1"})
    out = await _run_async(["doctor", "--json"], env)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    problems = report["problems"]
    assert any(p.startswith("E4009") and "hapa.backend.maxTokens" in p for p in problems)
    assert any(p.startswith("E5010") and "qwen2.5-coder:1.5b-base" in p and "ollama pull" in p for p in problems)
    fake.fault = "refuse"
    out = await _run_async(["doctor"], env)
    assert out.returncode == 1
    assert any(line.strip().startswith("- E5005") for line in out.stdout.splitlines())


async def test_doctor_with_openai_kind_and_bad_key(fake):
    fake.fault = "401"
    env = server_env(fake, {"HAPA_BACKEND_KIND": "openai", "HAPA_BACKEND_API_KEY": "wrong-key-123456"})
    out = await _run_async(["doctor"], env)
    assert out.returncode == 1
    assert "E5006" in out.stdout and "wrong-key-123456" not in out.stdout


async def _run_async(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the CLI without blocking the loop that serves the fake model."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hapa_lsp", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def test_log_file_gets_the_logs_and_stdout_only_the_protocol(tmp_path):
    log = tmp_path / "server.log"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"processId": None, "rootUri": None, "capabilities": {},
                                  "initializationOptions": {"backend": {"kind": "bad"}}}}).encode()
    exit_msgs = b"".join(b"Content-Length: %d\r\n\r\n" % len(m) + m for m in (
        json.dumps({"jsonrpc": "2.0", "method": "initialized", "params": {}}).encode(),
        json.dumps({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}).encode(),
        json.dumps({"jsonrpc": "2.0", "method": "exit"}).encode()))
    proc = subprocess.run([sys.executable, "-m", "hapa_lsp", "--log-file", str(log), "--log-level", "INFO"],
                          input=b"Content-Length: %d\r\n\r\n" % len(body) + body + exit_msgs,
                          env=server_env(None), capture_output=True, timeout=30)
    out = proc.stdout.decode()
    # stdout is nothing but framed JSON-RPC messages.
    rest = out
    while rest:
        header, _, rest = rest.partition("\r\n\r\n")
        assert header.startswith("Content-Length: "), header
        n = int(header.split("\r\n")[0].split(": ")[1])
        json.loads(rest[:n])
        rest = rest[n:]
    assert "E4009" in log.read_text()
    assert proc.stderr.decode().strip() == ""
