"""Structured logging with structlog: JSON or console lines to stderr or a rotating file, secrets redacted.

stdout carries the protocol, so no handler here ever writes to it. structlog itself is imported on
first use, not at start, because the time to the initialize response is part of the user's wait.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import json
import logging
import logging.handlers
import re
import sys
from typing import Any
from urllib.parse import unquote

import attrs

# Member names (compared without case, "-" and "_") whose values are credentials wherever they are logged.
_SECRET_NAMES = frozenset({"apikey", "xapikey", "authorization", "proxyauthorization", "password", "passwd", "token",
                           "accesstoken", "refreshtoken", "authtoken", "secret", "clientsecret", "secretkey",
                           "accesskey", "privatekey", "bearer"})
# Credential-shaped text: header lines, key=value and JSON-ish pairs (also inside JSON-escaped JSON, as in a
# logged message body), URL userinfo, Basic credentials, provider key prefixes. Each keeps the name and masks
# the value, so a line still says which credential was there.
_KEY_NAMES = (r"x[-_]?api[-_]?key|api[-_ ]?key|access[-_]?key|secret[-_]?key|private[-_]?key|client[-_]?secret|"
              r"access[-_]?token|refresh[-_]?token|auth[-_]?token|id[-_]?token|token|password|passwd|secret")
_AUTH_SCHEMES = r"basic|bearer|digest|token|negotiate|apikey"
_PATTERNS = (
    # Authorization: Basic dXNl..., "authorization": "Bearer x", Proxy-Authorization=...: scheme kept, rest masked.
    (re.compile(r"(?i)(\b(?:proxy-)?authorization\\?[\"']?\s*[:=]\s*\\?[\"']?)"
                rf"(?:({_AUTH_SCHEMES})\s+)?[^\s\"',;\\]+"),
     lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}****"),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;\\]+"), r"\1****"),
    # api_key=..., "api_key": "...", 'apiKey': '...', x-api-key: ..., password=... (the quote style is kept).
    (re.compile(rf"(?i)((?<![A-Za-z0-9])(?:{_KEY_NAMES})\\?[\"']?\s*[:=]\s*(\\?[\"']?))"
                r"(?:(?<=\")[^\"\\]*|(?<=')[^'\\]*|[^\s\"',;&)}\]\\]+)"), r"\1****"),
    # scheme://user:password@host -> scheme://****@host
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://)[^\s/@\"']+@"), r"\1****@"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-****"),
)
# "Basic <base64 of user:password>" outside an Authorization header: masked only when it decodes to a credential,
# so that prose like "basic configuration" stays as it is.
_BASIC = re.compile(r"(?i)(\bbasic\s+)([A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])")


def _mask_basic(m: re.Match[str]) -> str:
    try:
        decoded = base64.b64decode(m.group(2), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return m.group(0)
    return f"{m.group(1)}****" if ":" in decoded else m.group(0)


_known_secrets: set[str] = set()
_state: dict[str, Any] = {"configured": False, "json": False, "level": logging.INFO}


def register_secret(value: str) -> None:
    """Make sure ``value`` (an API key) is masked wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


# scheme://userinfo@ at the start of a URL; the userinfo runs to the last "@" before the path (passwords
# that contain an unescaped "@" included).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)@")


def public_url(url: str) -> str:
    """``url`` without its userinfo (``user:password@``): the one form of a URL that is shown or stored."""
    return _USERINFO.sub(r"\1", url) if "@" in url else url


def url_credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) in ``url``'s userinfo, percent-decoded, or None when it has none."""
    m = _USERINFO.match(url) if "@" in url else None
    if m is None:
        return None
    user, _, password = m.group(2).partition(":")
    return unquote(user), unquote(password)


def register_url_secret(url: str) -> None:
    """Mask the password of ``url`` (or its lone user part, often a token) wherever it would appear, as
    written and percent-decoded."""
    m = _USERINFO.match(url) if "@" in url else None
    if m is None:
        return
    user, sep, password = m.group(2).partition(":")
    raw = password if sep else user
    for value in (raw, unquote(raw)):
        register_secret(value)


def redact_text(text: str) -> str:
    """Mask known secrets and anything shaped like a credential."""
    for s in _known_secrets:
        if s in text:
            text = text.replace(s, "****")
    for rx, repl in _PATTERNS:
        text = rx.sub(repl, text)
    if "asic" in text or "ASIC" in text:
        text = _BASIC.sub(_mask_basic, text)
    return text


def _norm_key(key: Any) -> str:
    return str(key).replace("-", "").replace("_", "").replace(" ", "").lower()


def is_secret_key(key: Any) -> bool:
    """Whether a structure member named ``key`` holds a credential (apiKey, api_key, X-API-Key, password, ...)."""
    return _norm_key(key) in _SECRET_NAMES


def redact_structure(value: Any, key: Any = "", _depth: int = 0) -> Any:
    """``value`` with every member named like a credential masked (and remembered as a secret), at any depth,
    in dicts, lists, tuples and attrs objects (lsprotocol's params); strings get ``redact_text``. Returns the
    object itself when nothing in it needed masking."""
    if key and is_secret_key(key):
        if isinstance(value, str):
            register_secret(value)
        return "****" if value else value
    if isinstance(value, str):
        if "@" in value and "://" in value:
            register_url_secret(value.strip())
        return redact_text(value)
    if _depth > 32 or value is None or isinstance(value, (bool, int, float, bytes)):
        return value
    if isinstance(value, dict):
        out = {k: redact_structure(v, k, _depth + 1) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, (list, tuple)):
        items = [redact_structure(v, "", _depth + 1) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if attrs.has(type(value)):
        changed = {}
        for f in attrs.fields(type(value)):
            old = getattr(value, f.name, None)
            new = redact_structure(old, f.alias or f.name, _depth + 1)
            if new is not old:
                changed[f.name] = new
        if not changed:
            return value
        dup = copy.copy(value)
        for name, new in changed.items():
            object.__setattr__(dup, name, new)  # works for frozen and slotted classes alike
        return dup
    return value


def register_secrets_in(value: Any) -> None:
    """Remember every credential-named string in ``value`` (raw initializationOptions, a configuration
    answer), so that it is masked in any later line, also where it shows up without its name."""
    redact_structure(value)


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no API key or Authorization header survives into a rendered line."""
    return {k: redact_structure(v, k) for k, v in event_dict.items()}


class _RedactingFilter(logging.Filter):
    """For records from other libraries (pygls, httpx) that bypass structlog's processors: the arguments are
    masked as structures (pygls logs InitializeParams and configuration answers as objects), then the
    message as text, before any formatter sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            return True  # a structlog event: redact_processor handles it in the formatter
        try:
            if record.args:
                record.args = redact_structure(record.args)
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed foreign record must not break logging
            return True
        red = redact_text(msg)
        if red != msg or record.args:
            record.msg, record.args = red, None
        return True


def set_cli_overrides(*, level: str | None, file: str | None, fmt: str | None) -> None:
    """Remember the command-line logging flags: they win over settings applied later."""
    _state["cli"] = {"level": level, "file": file, "fmt": fmt}


def configure_from_settings(lg: Any) -> None:
    """Apply the ``hapa.logging`` settings section, keeping what the command line fixed."""
    cli = _state.get("cli") or {}
    configure(cli.get("level") or lg.level, cli.get("file") if cli.get("file") is not None else lg.file,
              cli.get("fmt") or lg.format, lg.max_bytes, lg.backups)


def configure(level: str = "INFO", file: str = "", fmt: str = "console", max_bytes: int = 50 * 1024 * 1024,
              backups: int = 3) -> None:
    """Route all logging (ours, pygls', httpx') to stderr or a rotating file; never stdout."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    handler: logging.Handler
    if file:
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups,
                                                       encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(_LazyFormatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    # pygls logs every message body at INFO; keep that out unless debugging.
    noisy = logging.DEBUG if lvl <= logging.DEBUG else logging.WARNING
    for name in ("pygls", "httpx", "httpcore", "asyncio", "parso", "jedi"):
        logging.getLogger(name).setLevel(max(noisy, lvl) if name in ("parso", "jedi", "httpcore") else noisy)
    _state.update(configured=True, json=(fmt == "json"), level=lvl)
    if "structlog" in sys.modules:
        _configure_structlog()


class _LazyFormatter(logging.Formatter):
    """Renders with structlog's ProcessorFormatter once structlog is loaded; before that plain text, or JSON
    lines of the same shape when the format is json."""

    def __init__(self, fmt: str):
        super().__init__("%(asctime)s [%(levelname)s] %(name)s: %(message)s")
        self._kind = fmt
        self._inner: logging.Formatter | None = None
        self._last: tuple[logging.LogRecord | None, str] = (None, "")

    def format(self, record: logging.LogRecord) -> str:
        # RotatingFileHandler formats every record twice (once to decide on rollover, once to write it);
        # render it once. Handlers call this under their lock, so one slot is enough.
        if record is self._last[0]:
            return self._last[1]
        if self._inner is None and "structlog" in sys.modules:
            self._inner = _processor_formatter(self._kind)
        if self._inner is not None:
            text = self._inner.format(record)
        elif self._kind == "json":
            text = self._json_line(record)
        else:
            text = super().format(record)
        # The last net: a traceback or anything else a renderer added is cleaned like a message.
        text = redact_text(text)
        self._last = (record, text)
        return text

    def _json_line(self, record: logging.LogRecord) -> str:
        """A line before structlog is loaded, with the keys structlog gives foreign records."""
        out: dict[str, Any] = {
            "event": record.getMessage(), "level": record.levelname.lower(), "logger": record.name,
            "timestamp": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat().replace(
                "+00:00", "Z"),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=repr)


def _processor_formatter(kind: str) -> logging.Formatter:
    import structlog  # deferred: not part of start-up (module docstring, tests/unit/test_startup.py)

    renderer = (structlog.processors.JSONRenderer() if kind == "json"
                else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback))
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_processor, renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    )


def _configure_structlog() -> None:
    import structlog  # deferred: not part of start-up (module docstring, tests/unit/test_startup.py)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_state["level"]),
        cache_logger_on_first_use=False,
    )
    _state["structlog"] = True


def get_logger(name: str = "hapa_lsp") -> Any:
    """A structlog logger (structlog is imported and configured on the first call)."""
    import structlog  # deferred: not part of start-up (module docstring, tests/unit/test_startup.py)

    if not _state.get("structlog"):
        _configure_structlog()
    return structlog.get_logger(name)
