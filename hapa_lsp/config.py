"""Typed, fully defaulted settings: defaults < environment < initializationOptions < workspace/configuration.

Every field is an attrs attribute with a ``doc`` (used by ``hapa-lsp doctor`` and the editor
extension generators), an optional validator and an optional ``secret`` flag. Settings are
validated once at the boundary, field by field: a bad value becomes a ``ConfigProblem`` (E4009,
naming the field) and the field keeps its default; nothing here ever raises at the user.
"""


import json
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs

from hapa_lsp.errors import CATALOG
from hapa_lsp.log import public_url, redact_text
from hapa_lsp.ops.ratelimit import BUILTIN_RULES
from hapa_lsp.ops.sidecar import is_loopback
from hapa_lsp.store import default_path
from hapa_lsp.stream import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_MAX_MESSAGE_BYTES,
    MIN_MAX_MESSAGE_BYTES,
)

SECTION = "hapa"


def _f(default: Any, doc: str, *, validator: Any = None, secret: bool = False, security: bool = False,
       factory: bool = False):
    """Declare a setting with its documentation (and optionally a validator, a secret flag, or the security flag:
    decides who may read the sidecar, so never taken from workspace/configuration)."""
    meta = {"doc": doc, "secret": secret, "security": security}
    if factory:
        return attrs.field(factory=default, metadata=meta, validator=validator, repr=not secret)
    return attrs.field(default=default, metadata=meta, validator=validator, repr=not secret)


_in = attrs.validators.in_
_ge = attrs.validators.ge
_le = attrs.validators.le
_and = attrs.validators.and_


@attrs.frozen
class BackendSettings:
    """Which model server to call and how."""

    kind: str = _f("ollama", "Model server dialect: `ollama` (native API), `openai` (any OpenAI-compatible server) "
                   "or `llamacpp` (llama.cpp's llama-server: FIM through /infill with its prompt cache reused).",
                   validator=_in(("ollama", "openai", "llamacpp")))
    endpoint: str = _f("http://127.0.0.1:11434", "Base URL of the model server (env alias AI_MODEL_ENDPOINT); user:password@ in it "
                       "is sent as Basic auth and shown nowhere.",
                       validator=attrs.validators.matches_re(r"https?://[^\s/]+.*"))
    api_key: str = _f("", "API key sent as a Bearer token (env alias AI_MODEL_API_KEY). Never logged or stored.",
                      secret=True)
    completion_model: str = _f("qwen2.5-coder:1.5b-base", "Model used for inline (fill-in-the-middle) completions.")
    chat_model: str = _f("qwen2.5-coder:7b-instruct", "Model used for instructions and code generation.")
    fim_template: str = _f("auto", "FIM prompt family: auto (from the model name), qwen, starcoder, codellama, "
                           "deepseek, codestral, codegemma, or chat (hole-filling chat prompt).",
                           validator=_in(("auto", "qwen", "starcoder", "codellama", "deepseek", "codestral",
                                          "codegemma", "chat")))
    fim_mode: str = _f("auto", "How FIM is sent: `template` (raw prompt with FIM tokens), `native` (prompt + suffix "
                       "fields), or auto (native for Ollama and Codestral, template otherwise).",
                       validator=_in(("auto", "template", "native")))
    request_timeout: float = _f(30.0, "Seconds to wait for a model answer (env alias REQUEST_TIMEOUT).",
                                validator=_and(_ge(0.1), _le(600.0)))
    connect_timeout: float = _f(2.0, "Seconds to wait for a connection to the model server.",
                                validator=_and(_ge(0.05), _le(60.0)))
    inline_timeout: float = _f(8.0, "Seconds an inline completion may take before it is given up.",
                               validator=_and(_ge(0.1), _le(120.0)))
    max_tokens: int = _f(128, "Maximum tokens generated for an inline completion.", validator=_and(_ge(1), _le(4096)))
    chat_max_tokens: int = _f(1024, "Maximum tokens generated for instructions and code generation.",
                              validator=_and(_ge(1), _le(32768)))
    temperature: float = _f(0.2, "Sampling temperature for completions.", validator=_and(_ge(0.0), _le(2.0)))
    max_connections: int = _f(8, "Pooled keep-alive connections to the model server.",
                              validator=_and(_ge(1), _le(64)))
    cache_reuse: int = _f(16, "Kind `llamacpp`: smallest run of cached tokens llama-server moves into place "
                          "(n_cache_reuse) when tokens before it were removed, e.g. text deleted above the cursor "
                          "or the start of the window cut; 0: only the common start of the prompt is reused.",
                          validator=_and(_ge(0), _le(4096)))
    infill_suffix_lines: int = _f(8, "Kind `llamacpp`: lines after the cursor sent with each completion (at most; "
                                  "0: all the window has). Everything after the cursor is evaluated again on every "
                                  "keystroke, since a prompt cache only keeps what comes before the first change; "
                                  "what comes before it is cached however long it is.",
                                  validator=_and(_ge(0), _le(10000)))
    warm_up: bool = _f(True, "Kind `llamacpp`: while the debounce runs, send the context and the lines above the "
                       "cursor with n_predict 0 when they changed, so the request after it finds them cached.")


@attrs.frozen
class CompletionSettings:
    """When and how suggestions are offered while typing."""

    enabled: bool = _f(True, "Offer AI suggestions at all.")
    inline: bool = _f(True, "Answer textDocument/inlineCompletion (ghost text).")
    in_completion_list: bool = _f(True, "Add the AI suggestion as an item of textDocument/completion lists.")
    jedi: bool = _f(True, "Add jedi's local completions to completion lists of Python files.")
    debounce_ms: int = _f(40, "Shortest wait after a keystroke before the model is called.",
                          validator=_and(_ge(0), _le(2000)))
    max_debounce_ms: int = _f(250, "Longest adaptive wait: the wait follows the typing rhythm between the two bounds.",
                              validator=_and(_ge(0), _le(5000)))
    list_wait_ms: int = _f(200, "How long a completion list waits for the AI item once jedi's items are ready; "
                           "after that the list is returned marked incomplete.", validator=_and(_ge(0), _le(10000)))
    jedi_timeout_ms: int = _f(800, "Time box for jedi's completions.", validator=_and(_ge(10), _le(10000)))
    max_lines: int = _f(16, "Longest multi-line suggestion, in lines.", validator=_and(_ge(1), _le(200)))
    min_chars: int = _f(2, "Suggestions with fewer non-blank characters are dropped.", validator=_and(_ge(1), _le(100)))
    languages: list[str] = _f(list, "Language ids to complete; empty means every language.", factory=True)


@attrs.frozen
class ContextSettings:
    """What goes into a prompt."""

    max_prompt_tokens: int = _f(2048, "Token budget of an inline completion prompt.",
                                validator=_and(_ge(64), _le(131072)))
    prefix_ratio: float = _f(0.9, "Share of the window given to the text before the cursor (the rest, after it, "
                             "comes after the point where each keystroke changes the prompt: a model server's "
                             "prompt cache reuses the part before).",
                             validator=_and(_ge(0.05), _le(0.95)))
    chars_per_token: float = _f(3.4, "Characters per token used to estimate prompt sizes.",
                                validator=_and(_ge(1.0), _le(10.0)))
    jedi_max_bytes: int = _f(1_000_000, "Documents larger than this get no jedi analysis (AI still works).",
                             validator=_ge(0))
    jedi_worker_max_mb: int = _f(150, "jedi runs in a worker process whose caches only grow: once it holds more "
                                      "than this many MB it is replaced when idle.", validator=_and(_ge(40), _le(8192)))
    exclude_globs: list[str] = _f(lambda: [".env*", "**/.env*", "*.pem", "*.key", "**/secrets/**", "id_rsa*",
                                           "**/id_rsa*"],
                                  "Files matching these globs are never read for context nor completed.",
                                  factory=True)
    tokenizer_path: str = _f("", "A tokenizer.json for exact token counts (needs the `tokenizers` extra); empty: "
                             "the model's tokenizer from the Hugging Face cache when present (never downloaded), "
                             "else an estimate from chars_per_token.")
    neighbour_snippets: int = _f(3, "Snippets from other open or recently edited files added to prompts (0: none).",
                                 validator=_and(_ge(0), _le(20)))
    recent_edits: int = _f(3, "Regions the user edited last (in any file, outside the window) added to inline "
                           "prompts, newest nearest the cursor (0: none).", validator=_and(_ge(0), _le(20)))
    facts: bool = _f(True, "Add signatures and docstrings (from jedi) of what the code near the cursor uses.")
    facts_time_budget_ms: int = _f(40, "Time box for building an inline prompt's context; what is ready when it "
                                   "ends is used (the rest is ready for the next keystroke).",
                                   validator=_and(_ge(0), _le(5000)))
    extra_context_ratio: float = _f(0.35, "Largest share of the prompt budget that facts and snippets from other "
                                    "files may take (unused share goes to the prefix and suffix).",
                                    validator=_and(_ge(0.0), _le(0.8)))
    generation_max_prompt_tokens: int = _f(8192, "Token budget of code generation and instruction prompts.",
                                           validator=_and(_ge(256), _le(262144)))


@attrs.frozen
class CacheSettings:
    """The in-process suggestion cache."""

    enabled: bool = _f(True, "Cache model answers.")
    ttl_seconds: float = _f(1800.0, "Seconds an entry lives (env alias CACHE_TTL).", validator=_ge(0.0))
    max_size: int = _f(1000, "Entries kept, least recently used evicted first (env alias MAX_CACHE_SIZE).",
                       validator=_ge(1))


@attrs.frozen
class LoggingSettings:
    """Structured logs; never to stdout, which carries the protocol."""

    level: str = _f("INFO", "DEBUG, INFO, WARNING or ERROR (env alias LOG_LEVEL).",
                    validator=_in(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")))
    file: str = _f("", "Log to this file (rotated) instead of stderr.")
    format: str = _f("console", "`console` (readable) or `json` (one JSON object per line).",
                     validator=_in(("console", "json")))
    max_bytes: int = _f(50 * 1024 * 1024, "Rotate the log file at this size (LOG_MAX_SIZE).", validator=_ge(1024))
    backups: int = _f(3, "Rotated log files kept.", validator=_and(_ge(0), _le(100)))


_SKILL_LEVELS = ("beginner", "intermediate", "advanced", "expert")
_OUTPUT_STRUCTURES = ("minimal", "standard", "detailed")
_EXPLANATION_STYLES = ("brief", "standard", "detailed", "educational")
AGENT_TARGETS = ("selection", "file", "comment")


@attrs.frozen
class ProfileSettings:
    """Who the generated code is for: changes comments, type hints, docstrings and explanation length."""

    python_skill_level: str = _f("intermediate", "beginner, intermediate, advanced or expert.",
                                 validator=_in(_SKILL_LEVELS))
    code_output_structure: str = _f("standard", "minimal, standard or detailed (comments and docstrings).",
                                    validator=_in(_OUTPUT_STRUCTURES))
    explanation_style: str = _f("standard", "brief, standard, detailed or educational.",
                                validator=_in(_EXPLANATION_STYLES))


@attrs.frozen
class Agent:
    """A named prompt preset, offered as a code action and through hapa.agent.run."""

    name: str = attrs.field(validator=attrs.validators.matches_re(r"\S.*"))
    system_prompt: str = attrs.field(validator=attrs.validators.matches_re(r"(?s)\s*\S.*"))
    description: str = ""
    model: str = ""
    temperature: float | None = attrs.field(default=None, validator=attrs.validators.optional(
        _and(_ge(0.0), _le(2.0))))
    applies_to: list[str] = attrs.field(factory=lambda: ["selection"])


@attrs.frozen
class AgentsSettings:
    """User-defined agents (named presets)."""

    presets: list[Agent] = _f(list, "Agents: objects with name, description, system_prompt and optional model, "
                              "temperature, applies_to (selection / file / comment).", factory=True)


@attrs.frozen
class StorageSettings:
    """The local SQLite database for history, feedback and incidents."""

    path: str = _f(lambda: _default_store_path(), "SQLite database file (default: hapa.db in the user's data "
                   "directory).", factory=True)


def _default_store_path() -> str:
    return default_path()


_RATE_RE = r"\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*"


def _rates_valid(_: Any, __: Any, value: dict[str, str]) -> None:
    bad = [f"{k}: {v!r}" for k, v in value.items() if not re.fullmatch(_RATE_RE, str(v))]
    if bad:
        raise ValueError(f"rates must look like 50/minute or 1000 per hour, got {'; '.join(bad)}")


def _builtin_rate_rules() -> dict[str, str]:
    return dict(BUILTIN_RULES)


@attrs.frozen
class SidecarSettings:
    """The sidecar HTTP endpoint: Prometheus metrics, health and the JSON and HTML dashboards."""

    enabled: bool = _f(True, "Start the sidecar HTTP endpoint.")
    host: str = _f("127.0.0.1", "Address to bind; anything but loopback is refused unless an API key is set.",
                   security=True)
    port: int = _f(7438, "First port to try; when it is taken the next free one is used (0: any free port).",
                   validator=_and(_ge(0), _le(65535)))
    api_key: str = _f("", "Key required in the X-API-Key header by every endpoint except /health and /metrics "
                      "(HAPA_SIDECAR_API_KEY). Never logged.", secret=True, security=True)
    metrics: bool = _f(True, "Collect Prometheus metrics and request analytics (off: /metrics is empty).")
    allowed_hosts: list[str] = _f(list, "Host names the sidecar may be addressed by besides loopback names, the bind "
                                  "host and (on a 0.0.0.0 / :: bind) IP addresses; any other Host header is "
                                  "answered 421 (DNS rebinding protection).", security=True, factory=True)


@attrs.frozen
class RateLimitSettings:
    """Per-feature rate limits on model calls and commands, in the original backend's syntax."""

    enabled: bool = _f(True, "Apply rate limits (env alias RATE_LIMIT_ENABLED).")
    default: int = _f(100, "Calls per window allowed to a command without its own rule (DEFAULT_RATE_LIMIT).",
                      validator=_and(_ge(1), _le(10_000_000)))
    window_minutes: int = _f(60, "The default rule's window in minutes (RATE_LIMIT_WINDOW_MINUTES).",
                             validator=_and(_ge(1), _le(525_600)))
    rules: dict[str, str] = _f(lambda: _builtin_rate_rules(),
                               "Limits per command or LSP method, e.g. {\"hapa.generateCode\": \"50/minute\"}; "
                               "merged over the built-in rules.", validator=_rates_valid, factory=True)
    exempt: list[str] = _f(lambda: ["hapa.did*", "hapa.health", "hapa.stats", "hapa.cache.stats"],
                           "Commands never rate limited (glob patterns; the bookkeeping an editor sends by itself).",
                           factory=True)


@attrs.frozen
class IncidentSettings:
    """Stored incidents (every E4xxx / E5xxx failure)."""

    retention_days: int = _f(30, "Days incidents are kept in the local database (env alias ERROR_RETENTION_DAYS).",
                             validator=_and(_ge(1), _le(3650)))


@attrs.frozen
class ResilienceSettings:
    """Retries of transient model failures and the circuit breaker that marks a model down."""

    retries: int = _f(3, "Attempts for a generation whose model call fails transiently (connect error, 5xx, timeout, "
                      "429); inline completions are never retried.", validator=_and(_ge(1), _le(10)))
    retry_max_wait: float = _f(10.0, "Longest wait in seconds between attempts; a longer Retry-After is not waited "
                               "for.", validator=_and(_ge(0.0), _le(300.0)))
    breaker_failures: int = _f(5, "Consecutive failures after which the model is marked down.",
                               validator=_and(_ge(1), _le(1000)))
    breaker_cooldown: float = _f(30.0, "Seconds a model marked down is not called before it is tried again.",
                                 validator=_and(_ge(0.1), _le(3600.0)))
    request_deadline: float = _f(600.0, "Seconds after which a request still unanswered is answered with E5004 and "
                                 "logged with its request id (a last resort: everything has its own, shorter "
                                 "timeouts); completion requests get a tenth of it.",
                                 validator=_and(_ge(1.0), _le(86400.0)))
    client_timeout: float = _f(5.0, "Seconds the server waits for the editor to answer one of its requests "
                               "(configuration, progress, show document; applying an edit gets twice as long) "
                               "before it goes on without the answer.",
                               validator=_and(_ge(0.1), _le(600.0)))


@attrs.frozen
class RedisSettings:
    """An optional shared second cache level in Redis, behind the in-process cache."""

    url: str = _f("", "redis://host:port/db of the shared cache (HAPA_REDIS_URL); empty: memory only.", secret=True)
    namespace: str = _f("hapa", "Key prefix, so that one Redis can serve several teams or tools.",
                        validator=attrs.validators.matches_re(r"[A-Za-z0-9_.-]{1,64}"))
    max_value_bytes: int = _f(65536, "Values larger than this stay in memory only.",
                              validator=_and(_ge(64), _le(16 * 1024 * 1024)))


@attrs.frozen
class ServerSettings:
    """The LSP connection itself."""

    max_message_bytes: int = _f(DEFAULT_MAX_MESSAGE_BYTES, "Largest LSP message read, in bytes: a longer one is "
                                "skipped unread (its request answered with E4001) and reading goes on with the next "
                                "message. The first messages, before the settings are read, get the environment's "
                                "value or the default (64 MiB).",
                                validator=_and(_ge(MIN_MAX_MESSAGE_BYTES), _le(MAX_MAX_MESSAGE_BYTES)))


@attrs.frozen
class NextEditSettings:
    """``hapa.nextEdit``: next edit suggestions (textDocument/copilotInlineEdit)."""

    enabled: bool = _f(True, "Answer textDocument/copilotInlineEdit: suggest the edit the user will make next, near "
                       "the cursor or at the next place that needs the same change. Costs model calls only when the "
                       "editor asks.")
    model: str = _f("", "Model for next edits; empty: hapa.backend.chatModel. A Zeta, Instinct or Sweep next-edit model "
                    "gets its own prompt format (from its name); any other model the generic instruction prompt.")
    format: str = _f("auto", "Prompt format: auto (from the model name), zeta, instinct, sweep or generic.",
                     validator=_in(("auto", "zeta", "instinct", "sweep", "generic")))
    lines_above: int = _f(4, "Lines above the cursor in the region the model may rewrite.",
                          validator=_and(_ge(0), _le(100)))
    lines_below: int = _f(8, "Lines below the cursor in the region the model may rewrite.",
                          validator=_and(_ge(0), _le(200)))
    context_lines: int = _f(40, "Lines of the document shown above and below the region (read-only context).",
                            validator=_and(_ge(0), _le(2000)))
    history_events: int = _f(16, "Edit-history hunks kept (across files), oldest dropped first.",
                             validator=_and(_ge(1), _le(200)))
    history_max_tokens: int = _f(1024, "Token budget of the edit history in a prompt.",
                                 validator=_and(_ge(16), _le(32768)))
    history_pause_ms: int = _f(1000, "A typing pause this long ends one edit-history hunk.",
                               validator=_and(_ge(50), _le(60000)))
    debounce_ms: int = _f(150, "Wait after the last keystroke before the model is called (a newer keystroke "
                          "supersedes the request).", validator=_and(_ge(0), _le(5000)))
    max_tokens: int = _f(512, "Maximum tokens the model may write for the rewritten region.",
                         validator=_and(_ge(16), _le(8192)))
    timeout: float = _f(10.0, "Seconds a next edit may take before it is given up.", validator=_and(_ge(0.1), _le(600)))


@attrs.frozen
class Settings:
    """The whole settings tree, section ``hapa``."""

    backend: BackendSettings = attrs.field(factory=BackendSettings)
    completion: CompletionSettings = attrs.field(factory=CompletionSettings)
    context: ContextSettings = attrs.field(factory=ContextSettings)
    cache: CacheSettings = attrs.field(factory=CacheSettings)
    logging: LoggingSettings = attrs.field(factory=LoggingSettings)
    profile: ProfileSettings = attrs.field(factory=ProfileSettings)
    agents: AgentsSettings = attrs.field(factory=AgentsSettings)
    storage: StorageSettings = attrs.field(factory=StorageSettings)
    sidecar: SidecarSettings = attrs.field(factory=SidecarSettings)
    rate_limits: RateLimitSettings = attrs.field(factory=RateLimitSettings)
    incidents: IncidentSettings = attrs.field(factory=IncidentSettings)
    resilience: ResilienceSettings = attrs.field(factory=ResilienceSettings)
    redis: RedisSettings = attrs.field(factory=RedisSettings)
    server: ServerSettings = attrs.field(factory=ServerSettings)
    next_edit: NextEditSettings = attrs.field(factory=NextEditSettings)


# Environment names of the original backend that keep working.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "AI_MODEL_ENDPOINT": ("backend", "endpoint"),
    "AI_MODEL_API_KEY": ("backend", "api_key"),
    "REQUEST_TIMEOUT": ("backend", "request_timeout"),
    "CACHE_TTL": ("cache", "ttl_seconds"),
    "MAX_CACHE_SIZE": ("cache", "max_size"),
    "LOG_LEVEL": ("logging", "level"),
    "LOG_MAX_SIZE": ("logging", "max_bytes"),
    "RATE_LIMIT_ENABLED": ("rate_limits", "enabled"),
    "DEFAULT_RATE_LIMIT": ("rate_limits", "default"),
    "RATE_LIMIT_WINDOW_MINUTES": ("rate_limits", "window_minutes"),
    "ERROR_RETENTION_DAYS": ("incidents", "retention_days"),
}


UNKNOWN = "is not a known setting"
WORKSPACE = "workspace/configuration"
NOT_FROM_WORKSPACE = ("is a security setting, never taken from workspace/configuration (a repository's settings files "
                      "can reach it); set it in the environment or initializationOptions")
NO_WEAKENING = "would weaken what the environment sets (clear its key or move its loopback bind off loopback)"


@attrs.frozen
class ConfigProblem:
    """A setting that could not be used: its dotted path, the bad value's source and why."""

    path: str
    reason: str
    source: str
    code: str = "E4009"

    @property
    def message(self) -> str:
        """One line for the user: code, field, reason and the fix."""
        ignored = self.reason == UNKNOWN or self.code != "E4009"
        tail = "it is ignored" if ignored else "using the default until it is fixed"
        return f"{self.code} {CATALOG[self.code].title}: {self.path} ({self.source}) {self.reason}; {tail}."



def camel(name: str) -> str:
    """snake_case -> camelCase, the spelling settings have in editors."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _is_settings_class(tp: Any) -> bool:
    return isinstance(tp, type) and attrs.has(tp)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()

    def s_bool(v: Any, _: Any) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {v!r}")

    def s_int(v: Any, _: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"expected a whole number, got {v!r}")
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            return int(v)
        raise ValueError(f"expected a whole number, got {v!r}")

    def s_float(v: Any, _: Any) -> float:
        if isinstance(v, bool):
            raise ValueError(f"expected a number, got {v!r}")
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {v!r}")

    def s_str(v: Any, _: Any) -> str:
        if isinstance(v, str):
            return v
        raise ValueError(f"expected a string, got {type(v).__name__}")

    def s_list_str(v: Any, _: Any) -> list[str]:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                v = json.loads(v)
            else:
                return [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return list(v)
        raise ValueError("expected a list of strings")

    conv.register_structure_hook(bool, s_bool)
    conv.register_structure_hook(int, s_int)
    conv.register_structure_hook(float, s_float)
    conv.register_structure_hook(str, s_str)
    conv.register_structure_hook_func(lambda t: t == list[str], s_list_str)

    def s_agents(v: Any, _: Any) -> list[Agent]:
        # Each agent is checked field by field so the problem names the agent and the field.
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                raise ValueError("expected a JSON list of agent objects") from None
        if not isinstance(v, list):
            raise ValueError("expected a list of agent objects")
        out: list[Agent] = []
        seen: set[str] = set()
        for i, item in enumerate(v):
            where = f"item {i}"
            if not isinstance(item, Mapping):
                raise ValueError(f"{where} must be an object with name and system_prompt")
            known = {camel(f.name): f for f in attrs.fields(Agent)}
            kwargs: dict[str, Any] = {}
            for key, value in item.items():
                f = known.get(key) or known.get(camel(_snake(key)))
                if f is None:
                    raise ValueError(f"{where}: {key!r} is not a known agent field")
                try:
                    if f.name == "applies_to":
                        value = [value] if isinstance(value, str) else value
                        value = s_list_str(value, None)
                        bad = [x for x in value if x not in AGENT_TARGETS]
                        if bad or not value:
                            raise ValueError(f"must be a list of {', '.join(AGENT_TARGETS)}, got {value!r}")
                    elif f.name == "temperature":
                        value = None if value is None else s_float(value, None)
                        if value is not None and not 0.0 <= value <= 2.0:
                            raise ValueError(f"is out of range 0..2, got {value!r}")
                    else:
                        value = s_str(value, None)
                except ValueError as exc:
                    raise ValueError(f"{where}: {camel(f.name)} {exc}") from None
                kwargs[f.name] = value
            for required in ("name", "system_prompt"):
                if not str(kwargs.get(required, "")).strip():
                    raise ValueError(f"{where}: {camel(required)} is required")
            agent = Agent(**kwargs)
            if agent.name in seen:
                raise ValueError(f"{where}: the name {agent.name!r} is used twice")
            seen.add(agent.name)
            out.append(agent)
        return out

    conv.register_structure_hook_func(lambda t: t == list[Agent], s_agents)

    def s_dict_str(v: Any, _: Any) -> dict[str, str]:
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                raise ValueError("expected a JSON object of strings") from None
        if isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            return dict(v)
        raise ValueError("expected an object whose values are strings")

    conv.register_structure_hook_func(lambda t: t == dict[str, str], s_dict_str)
    return conv


converter = _make_converter()


def _build(cls: type, raw: Mapping[str, Any], sources: Mapping[str, str], path: str,
           problems: list[ConfigProblem]) -> Any:
    """Structure one settings class field by field, keeping defaults where values are bad."""
    kwargs: dict[str, Any] = {}
    known = {camel(f.name): f for f in attrs.fields(cls)}
    for key, value in raw.items():
        f = known.get(key) or known.get(camel(_snake(key)))
        here = f"{path}.{key}"
        if f is None:
            problems.append(ConfigProblem(here, UNKNOWN, sources.get(here, "settings")))
            continue
        dotted = f"{path}.{camel(f.name)}"
        src = sources.get(dotted, "settings")
        if _is_settings_class(f.type):
            if not isinstance(value, Mapping):
                problems.append(ConfigProblem(dotted, "must be an object", src))
                continue
            kwargs[f.name] = _build(f.type, value, sources, dotted, problems)
            continue
        try:
            v = converter.structure(value, f.type)
            if f.validator is not None:
                f.validator(None, f, v)
        except Exception as exc:  # noqa: BLE001 - any bad value is reported and defaulted
            reason = redact_text(str(exc).split("\n")[0])  # the bad value may be a URL with a password
            if isinstance(exc, ValueError) and "must be in" in reason:
                reason = f"must be one of {', '.join(map(str, f.validator.options))}, got {value!r}"
            elif isinstance(exc, ValueError) and ("must be >=" in reason or "must be <=" in reason):
                reason = f"{reason.split(':')[0].replace(chr(39), '')} (got {value!r})"
            problems.append(ConfigProblem(dotted, reason, src))
            continue
        kwargs[f.name] = v
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any], sources: dict[str, str], source: str,
                prefix: str) -> None:
    for key, value in over.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, sources, source, dotted)
        elif isinstance(value, Mapping):
            base[key] = {}
            _deep_merge(base[key], value, sources, source, dotted)
        else:
            base[key] = value
            sources[dotted] = source


def env_layer(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from the environment: HAPA_<SECTION>_<FIELD> and the original backend's aliases."""
    environ = os.environ if environ is None else environ
    out: dict[str, dict[str, Any]] = {}
    for alias, (section, name) in ENV_ALIASES.items():
        if alias in environ:
            out.setdefault(section, {})[camel(name)] = environ[alias]
    for sec in attrs.fields(Settings):
        for f in attrs.fields(sec.type):
            var = f"HAPA_{sec.name.upper()}_{f.name.upper()}"
            if var in environ:
                out.setdefault(sec.name, {})[camel(f.name)] = environ[var]
    return out


def _unwrap_section(layer: Any) -> Mapping[str, Any]:
    """Accept both ``{"hapa": {...}}`` and ``{...}``, as clients send either."""
    if not isinstance(layer, Mapping):
        return {}
    inner = layer.get(SECTION)
    if isinstance(inner, Mapping):
        return inner
    return layer


def security_settings() -> list[tuple[str, str]]:
    """(section, camelCase field) of every setting flagged ``security``."""
    return [(sec.name, camel(f.name)) for sec in attrs.fields(Settings) for f in attrs.fields(sec.type)
            if f.metadata.get("security")]


def _without_security(layer: Mapping[str, Any], problems: list[ConfigProblem]) -> Mapping[str, Any]:
    """The workspace/configuration layer less its security settings, each one reported (E4005)."""
    flagged = set(security_settings())
    out: dict[str, Any] = dict(layer)
    for sec_key, section in layer.items():
        sec = _snake(str(sec_key))
        if not isinstance(section, Mapping) or not any(s == sec for s, _ in flagged):
            continue
        kept = {}
        for key, value in section.items():
            if (sec, camel(_snake(str(key)))) in flagged:
                problem = ConfigProblem(f"{SECTION}.{camel(sec)}.{camel(_snake(str(key)))}", NOT_FROM_WORKSPACE,
                                        WORKSPACE, code="E4005")
                if problem not in problems:  # apiKey and api_key: one setting, one report
                    problems.append(problem)
            else:
                kept[key] = value
        out[sec_key] = kept
    return out


def _keep_environment_security(settings: Settings, env_only: Settings, env_sources: Mapping[str, str],
                               problems: list[ConfigProblem]) -> Settings:
    """initializationOptions may not clear the sidecar key the environment sets, nor move a loopback bind that
    the environment sets off loopback (a workspace-local editor config can feed initializationOptions)."""
    env, now = env_only.sidecar, settings.sidecar
    keep: dict[str, Any] = {}
    if env.api_key and not now.api_key:
        keep["api_key"] = env.api_key
    if (env_sources.get(f"{SECTION}.sidecar.host") == "environment" and is_loopback(env.host)
            and not is_loopback(now.host)):
        keep["host"] = env.host
    for name in keep:
        problems.append(ConfigProblem(f"{SECTION}.sidecar.{camel(name)}", NO_WEAKENING, "initializationOptions",
                                      code="E4005"))
    return attrs.evolve(settings, sidecar=attrs.evolve(now, **keep)) if keep else settings


def load(*, environ: Mapping[str, str] | None = None, init_options: Any = None,
         workspace: Any = None) -> tuple[Settings, list[ConfigProblem]]:
    """Merge the layers and validate once; returns the settings and what was wrong with them.

    Security settings (``security_settings()``: who may read the sidecar) follow two more rules: a
    workspace/configuration answer cannot set them at all, and initializationOptions cannot weaken what the
    environment sets for them (clear the key, move a loopback bind off loopback)."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    env_only: Settings | None = None
    env_sources: dict[str, str] = {}
    for source, layer in (("environment", env_layer(environ)),
                          ("initializationOptions", init_options),
                          (WORKSPACE, workspace)):
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            problems.append(ConfigProblem(SECTION, "must be an object", source))
            continue
        inner = _unwrap_section(layer)
        if source == WORKSPACE:
            inner = _without_security(inner, problems)
        elif source == "initializationOptions":
            env_only, env_sources = _build(Settings, merged, sources, SECTION, []), dict(sources)
        _deep_merge(merged, inner, sources, source, SECTION)
    settings = _build(Settings, merged, sources, SECTION, problems)
    if env_only is not None:
        settings = _keep_environment_security(settings, env_only, env_sources, problems)
    return settings, problems


def to_dict(settings: Any, *, mask_secrets: bool = True) -> dict[str, Any]:
    """The settings as a camelCase dict, secrets masked (for doctor and logs)."""
    out: dict[str, Any] = {}
    for f in attrs.fields(type(settings)):
        v = getattr(settings, f.name)
        if attrs.has(type(v)):
            out[camel(f.name)] = to_dict(v, mask_secrets=mask_secrets)
        elif mask_secrets and f.metadata.get("secret") and v:
            out[camel(f.name)] = mask(v)
        elif mask_secrets and isinstance(v, str):
            out[camel(f.name)] = public_url(v)  # an endpoint's user:password@ is a secret too
        else:
            out[camel(f.name)] = [to_dict(x, mask_secrets=mask_secrets) if attrs.has(type(x)) else x
                                  for x in v] if isinstance(v, list) else v
    return out


def mask(secret: str) -> str:
    """Show that a secret is set without showing it."""
    return "****" + (secret[-2:] if len(secret) >= 12 else "")


def schema() -> list[dict[str, Any]]:
    """Every setting with its dotted name, type, default and doc (for editor extension generators)."""
    rows: list[dict[str, Any]] = []
    defaults = Settings()
    for sec in attrs.fields(Settings):
        for f in attrs.fields(sec.type):
            default = getattr(getattr(defaults, sec.name), f.name)
            tp = f.type
            kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
                tp, "object" if tp == dict[str, str] else "array")
            row: dict[str, Any] = {
                "key": f"{SECTION}.{sec.name}.{camel(f.name)}",
                "type": kind,
                "default": list(default) if isinstance(default, list) else default,
                "description": f.metadata.get("doc", ""),
                "secret": bool(f.metadata.get("secret")),
                "security": bool(f.metadata.get("security")),
            }
            options = getattr(f.validator, "options", None)
            if options:
                row["enum"] = list(options)
            rows.append(row)
    return rows
