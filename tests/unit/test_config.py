"""Settings: defaults, layer order, env aliases, per-field validation with defaults kept, secrets masked."""

from __future__ import annotations

from hapa_lsp import config


def test_defaults_are_the_documented_ones():
    s, problems = config.load(environ={})
    assert problems == []
    assert s.backend.kind == "ollama" and s.backend.endpoint == "http://127.0.0.1:11434"
    assert s.backend.completion_model == "qwen2.5-coder:1.5b-base"
    assert s.backend.chat_model == "qwen2.5-coder:7b-instruct"
    assert s.cache.ttl_seconds == 1800 and s.cache.max_size == 1000


def test_layers_environment_then_init_options_then_workspace():
    env = {"HAPA_BACKEND_MAX_TOKENS": "10", "HAPA_BACKEND_TEMPERATURE": "0.5", "HAPA_CACHE_ENABLED": "false"}
    s, problems = config.load(environ=env, init_options={"backend": {"maxTokens": 20}},
                              workspace={"hapa": {"backend": {"maxTokens": 30}}})
    assert problems == []
    assert s.backend.max_tokens == 30 and s.backend.temperature == 0.5 and s.cache.enabled is False


def test_original_backend_env_names_are_aliases():
    env = {"AI_MODEL_ENDPOINT": "http://gpu:8000", "AI_MODEL_API_KEY": "k-123", "REQUEST_TIMEOUT": "12",
           "CACHE_TTL": "60", "MAX_CACHE_SIZE": "5", "LOG_LEVEL": "DEBUG"}
    s, problems = config.load(environ=env)
    assert problems == []
    assert (s.backend.endpoint, s.backend.api_key, s.backend.request_timeout) == ("http://gpu:8000", "k-123", 12.0)
    assert (s.cache.ttl_seconds, s.cache.max_size, s.logging.level) == (60.0, 5, "DEBUG")
    # The project's own name wins over the alias.
    s, _ = config.load(environ={**env, "HAPA_BACKEND_ENDPOINT": "http://other:1"})
    assert s.backend.endpoint == "http://other:1"


def test_bad_values_are_reported_by_field_and_defaulted():
    s, problems = config.load(environ={"HAPA_CACHE_MAX_SIZE": "lots"},
                              init_options={"backend": {"kind": "grpc", "temperature": 9, "endpoint": "not a url"},
                                            "completion": {"inline": "maybe", "languages": "python, rust"},
                                            "nonsense": 1})
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {"hapa.cache.maxSize", "hapa.backend.kind", "hapa.backend.temperature",
                            "hapa.backend.endpoint", "hapa.completion.inline", "hapa.nonsense"}
    assert s.cache.max_size == 1000 and s.backend.kind == "ollama" and s.backend.temperature == 0.2
    assert s.completion.inline is True and s.completion.languages == ["python", "rust"]
    assert by_path["hapa.cache.maxSize"].source == "environment"
    assert "E4009" in by_path["hapa.backend.kind"].message and "ollama, openai" in by_path["hapa.backend.kind"].message


def test_non_object_layers_and_sections_are_reported():
    s, problems = config.load(init_options=["not", "an", "object"], workspace={"backend": 5})
    assert {p.path for p in problems} == {"hapa", "hapa.backend"}
    assert s == config.Settings()


def test_secrets_are_masked_and_not_in_repr():
    s, _ = config.load(init_options={"backend": {"apiKey": "sk-very-secret-key-1234"}})
    assert "sk-very-secret" not in repr(s)
    assert config.to_dict(s)["backend"]["apiKey"] == "****34"
    rows = {r["key"]: r for r in config.schema()}
    assert rows["hapa.backend.apiKey"]["secret"] is True
    assert rows["hapa.backend.kind"]["enum"] == ["ollama", "openai", "llamacpp"]
    assert all(r["description"] for r in rows.values())


def test_lifecycle_asks_for_the_settings_section():
    from hapa_lsp.features import lifecycle

    assert lifecycle.SECTION == config.SECTION


def test_security_settings_are_not_taken_from_the_workspace_layer_nor_weakened_by_init_options():
    env = {"HAPA_SIDECAR_HOST": "127.0.0.1", "HAPA_SIDECAR_API_KEY": "env-key-123"}
    s, problems = config.load(environ=env, init_options={"sidecar": {"apiKey": "", "host": "0.0.0.0"}},
                              workspace={"hapa": {"sidecar": {"api_key": "ws", "host": "0.0.0.0", "port": 9,
                                                              "allowedHosts": ["evil.example"]}}})
    assert (s.sidecar.host, s.sidecar.api_key, s.sidecar.allowed_hosts, s.sidecar.port) == (
        "127.0.0.1", "env-key-123", [], 9)
    found = {(p.path, p.source, p.code) for p in problems}
    assert found == {("hapa.sidecar.apiKey", "workspace/configuration", "E4005"),
                     ("hapa.sidecar.host", "workspace/configuration", "E4005"),
                     ("hapa.sidecar.allowedHosts", "workspace/configuration", "E4005"),
                     ("hapa.sidecar.apiKey", "initializationOptions", "E4005"),
                     ("hapa.sidecar.host", "initializationOptions", "E4005")}
    assert all(p.message.startswith("E4005 Permission denied: hapa.sidecar.") for p in problems)
    # Without the environment saying otherwise, initializationOptions (the user's editor config) set them freely.
    s, problems = config.load(environ={}, init_options={"sidecar": {"apiKey": "k-init-1", "host": "0.0.0.0"}})
    assert (s.sidecar.host, s.sidecar.api_key, problems) == ("0.0.0.0", "k-init-1", [])
