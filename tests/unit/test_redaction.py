"""Credential-shaped text is masked wherever it ends up (log lines, incident details, upstream error bodies)."""

from __future__ import annotations

import json

import pytest

from hapa_lsp.log import redact_text

CRED = "dXNlcjpwYXNz"  # base64("user:pass")


@pytest.mark.parametrize("text, secret, kept", [
    (f"Authorization: Basic {CRED}", CRED, "Authorization: Basic ****"),
    (f'{{"Authorization": "Basic {CRED}"}}', CRED, '{"Authorization": "Basic ****"}'),
    ("authorization=Bearer tok.abc-123", "tok.abc-123", "authorization=Bearer ****"),
    ("Proxy-Authorization: Digest abcdef0123", "abcdef0123", "Proxy-Authorization: Digest ****"),
    ("retrying with Bearer tok-999999 now", "tok-999999", "Bearer ****"),
    (f"sent Basic {CRED} to the proxy", CRED, "Basic ****"),
    (f"SENT BASIC {CRED}", CRED, "BASIC ****"),
    ("x-api-key: k-123456789", "k-123456789", "x-api-key: ****"),
    ("X-API-Key=k-123456789", "k-123456789", "X-API-Key=****"),
    ('{"x-api-key": "k 1 2 3 4"}', "k 1 2 3 4", '"x-api-key": "****"'),
    ("GET /v1/models?api_key=abc123def&page=2", "abc123def", "api_key=****&page=2"),
    ('{"error": "bad request", "api_key": "abc123def"}', "abc123def", '"api_key": "****"'),
    ("{'apiKey': 'abc123def'}", "abc123def", "'apiKey': '****'"),
    ('"params": "{\\"apiKey\\": \\"abc123def\\"}"', "abc123def", '\\"apiKey\\": \\"****\\"'),
    ("login failed for password=hunter22;", "hunter22", "password=****;"),
    ("access_token=eyJhbGciOi.x.y", "eyJhbGciOi.x.y", "access_token=****"),
    ("Invalid API key: abc123def", "abc123def", "API key: ****"),
    ("cannot connect to http://user:s3cr3t@127.0.0.1:9/v1", "s3cr3t", "http://****@127.0.0.1:9/v1"),
    ("redis://:s3cr3t@127.0.0.1:6379/0 is down", "s3cr3t", "redis://****@127.0.0.1:6379/0"),
])
def test_credentials_in_free_text_are_masked(text: str, secret: str, kept: str):
    out = redact_text(text)
    assert secret not in out
    assert kept in out


@pytest.mark.parametrize("text", [
    "basic configuration is missing",
    "max_tokens=128 and 5 tokens: done",
    "workDoneToken='abc-1'",
    "see http://127.0.0.1:11434/api/tags?q=a@b",
    "the API key is not set",
])
def test_ordinary_text_is_left_alone(text: str):
    assert redact_text(text) == text


def test_upstream_error_body_is_masked_before_it_is_cut():
    from hapa_lsp.backends import Backend
    from hapa_lsp.config import BackendSettings

    backend = Backend(BackendSettings(), client=None)  # type: ignore[arg-type]
    body = '{"error": {"message": "quota", "api_key": "sk_live_0123456789abcdef", "x-api-key": "zz-99887766"}}'
    err = backend._map_status(500, body, {})
    assert "0123456789abcdef" not in err.detail and "zz-99887766" not in err.detail
    assert '"api_key": "****"' in err.detail


def test_foreign_records_are_masked_by_member_name_and_the_values_remembered(tmp_path):
    """pygls logs InitializeParams and configuration answers as objects: masked by name at any depth, with
    values a text pattern cannot delimit (a backslash), and the value is masked later without its name too."""
    import logging

    from lsprotocol import types

    from hapa_lsp import log

    weird = 'pa\\ss"wo,rd-7781'
    token = "tok-Zx81-qq0001"
    path = tmp_path / "x.log"
    log.configure("DEBUG", str(path), "console")
    try:
        params = types.InitializeParams(capabilities=types.ClientCapabilities(), initialization_options={
            "hapa": {"backend": {"API_KEY": weird}, "list": [{"X-Api-Key": token}]}})
        pygls_log = logging.getLogger("pygls.protocol.language_server")
        pygls_log.info("Language server initialized %s", params)
        pygls_log.debug('Received result for message "%s": %s', "m1", [{"sidecar": {"Password": token + "b"}}])
        logging.getLogger("httpx").warning("upstream rejected %s and %s", weird, token)
        for h in logging.getLogger().handlers:
            h.flush()
        text = path.read_text(encoding="utf-8")
    finally:
        log.configure("WARNING", "", "console")
    assert "Language server initialized" in text and "Received result" in text
    for s in (weird, "ss\\\\\"wo", token, token + "b", "wo,rd-7781"):
        assert s not in text
    assert "upstream rejected **** and ****" in text
    # The logged object itself is untouched: the server still reads the real options.
    assert params.initialization_options["hapa"]["backend"]["API_KEY"] == weird


def test_json_format_lines_are_json_before_structlog_is_loaded(tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / "early.log"
    code = ("import logging, sys\n"
            "from hapa_lsp import log\n"
            f"log.configure('DEBUG', {str(path)!r}, 'json')\n"
            "logging.getLogger('pygls.server').info('Starting async IO server %s', {'apiKey': 'k-early-123'})\n"
            "assert 'structlog' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    lines = path.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    assert rec["logger"] == "pygls.server" and rec["level"] == "info" and rec["timestamp"].endswith("Z")
    assert "Starting async IO server" in rec["event"] and "k-early-123" not in lines[0]


@pytest.mark.parametrize("url, shown, creds", [
    ("http://alice:pw@127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1", ("alice", "pw")),
    ("https://tok3n@api.example.test", "https://api.example.test", ("tok3n", "")),
    ("http://u:p@ss@[::1]:9/x?y=a@b", "http://[::1]:9/x?y=a@b", ("u", "p@ss")),
    ("http://u:p%40ss%3A@host", "http://host", ("u", "p@ss:")),
    ("http://127.0.0.1:11434", "http://127.0.0.1:11434", None),
    ("http://h/p?email=a@b", "http://h/p?email=a@b", None),
])
def test_public_url_drops_userinfo_and_credentials_are_decoded(url: str, shown: str, creds):
    from hapa_lsp.log import public_url, url_credentials

    assert public_url(url) == shown
    assert url_credentials(url) == creds


def test_settings_report_and_problems_never_show_url_passwords():
    from hapa_lsp import config

    settings, problems = config.load(environ={}, init_options={
        "backend": {"endpoint": "http://alice:pw-Zx19q@127.0.0.1:9"},
        "redis": {"url": "redis://:pw-Rr55t@127.0.0.1:6379/0"},
        "sidecar": {"port": "ftp://bob:pw-Kk71m@h"}})
    shown = json.dumps(config.to_dict(settings)) + " ".join(p.message for p in problems)
    assert problems and "hapa.sidecar.port" in shown
    for secret in ("pw-Zx19q", "pw-Rr55t", "pw-Kk71m"):
        assert secret not in shown
    assert "http://127.0.0.1:9" in shown
