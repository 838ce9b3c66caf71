"""The error catalog (E4xxx client, E5xxx server) and the one exception root, HapaError.

Hierarchy (one class per catalog code; the code is the class attribute ``code``, never a string a caller
passes, so handlers tell failures apart with ``isinstance``)::

    HapaError                       every failure a user can see; fields: detail, field, retry_after, model,
    │                               fast, incident_id; ``recorded`` once an incident is stored
    ├── InputError                  E4xxx: the request or the configuration is at fault
    │   ├── InvalidInput            E4001 (wrong type / range; ``field`` names it)
    │   ├── MissingField            E4002
    │   ├── InvalidApiKey           E4003 (sidecar)
    │   ├── RateLimited             E4004 (hapa.rateLimits; ``retry_after``)
    │   ├── PermissionDenied        E4005
    │   ├── DocumentNotOpen         E4006 (the client's state: never an incident)
    │   ├── FileExcluded            E4007
    │   ├── Cancelled               E4008
    │   ├── ConfigInvalid           E4009
    │   ├── UnsupportedLanguage     E4010
    │   ├── ValidationFailed        E4011 (generation.GenerationRejected carries the rejected attempt)
    │   └── ContextTooLarge         E4012
    ├── CacheUnavailable            E5002
    ├── StorageError                E5003
    ├── InternalError               E5004 (``as_hapa_error`` wraps anything foreign in it)
    └── UpstreamError               E5xxx raised while talking to the model server
        ├── ModelUnreachable        E5005 (connect refused, DNS)
        ├── ModelTimeout            E5001
        ├── UpstreamAuthError       E5006 (401 / 403)
        ├── UpstreamRateLimited     E5007 (429, carries retry_after)
        ├── MalformedResponse       E5008 (bad JSON, stream cut mid-way)
        ├── ModelNotFound           E5010 (404: the model is not pulled / wrong name)
        └── UpstreamServerError     E5009 (5xx)

Foreign exceptions (httpx, json, sqlite3) are mapped to these at the edge with ``raise ... from exc``.
Every instance gets an incident id ``INC-YYYYMMDD-XXXXXXXX`` when it is created, so the id a user
sees in the editor is the one in the log line and in the store.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One catalog entry: what went wrong, what to do about it, and whether retrying can help."""

    code: str
    title: str
    remedy: str
    retryable: bool
    category: str  # "client" (E4xxx) or "server" (E5xxx)


def _spec(code: str, title: str, remedy: str, retryable: bool = False) -> ErrorSpec:
    return ErrorSpec(code, title, remedy, retryable, "client" if code.startswith("E4") else "server")


CATALOG: dict[str, ErrorSpec] = {
    s.code: s
    for s in (
        # The nine codes of the original backend keep their meaning.
        _spec("E4001", "Invalid input format",
              "Check the argument types and values named in the message and send the request again."),
        _spec("E4002", "Missing required field",
              "Add the field named in the message to the request."),
        _spec("E4003", "Invalid API key",
              "Send the key configured in HAPA_SIDECAR_API_KEY in the X-API-Key header."),
        _spec("E4004", "Rate limit exceeded",
              "Wait for the time given in the message, or raise the limit in hapa.rateLimits.", True),
        _spec("E4005", "Permission denied",
              "This operation is not allowed with the current settings; see the message for which one."),
        _spec("E5001", "AI model timeout",
              "The model took too long; it is retried automatically. Use a smaller model or raise "
              "hapa.backend.requestTimeout (REQUEST_TIMEOUT).", True),
        _spec("E5002", "Cache service error",
              "The shared cache is unavailable and is bypassed; check HAPA_REDIS_URL and that Redis runs.", True),
        _spec("E5003", "Database connection error",
              "The local database could not be used; check that hapa.storage.path is writable. "
              "The operation is retried.", True),
        _spec("E5004", "Internal server error",
              "An unexpected error in hapa-lsp; report it with the incident id and the log file."),
        # Thirteen more, for what really fails in an LSP AI assistant.
        _spec("E4006", "Document not open",
              "Open the file in the editor before asking for completions or code on it."),
        _spec("E4007", "File excluded from AI",
              "The file matches hapa.context.excludeGlobs and is never sent to the model; "
              "remove the pattern if that is not intended."),
        _spec("E4008", "Request cancelled",
              "Nothing to do: the request was cancelled (by the editor or by a newer keystroke)."),
        _spec("E4009", "Configuration invalid",
              "Fix the setting named in the message; its default is used until then."),
        _spec("E4010", "Unsupported language",
              "This feature is not available for the document's language."),
        _spec("E4011", "Generated code failed validation",
              "The model's code did not pass the checks named in the message; rephrase the request "
              "or try a larger model."),
        _spec("E4012", "Context too large",
              "The code or question is larger than a generation prompt holds "
              "(hapa.context.generationMaxPromptTokens, at about hapa.context.charsPerToken characters a token); "
              "select a smaller range or raise that limit."),
        _spec("E5005", "Model server unreachable",
              "Start the model server (e.g. `ollama serve`) or fix hapa.backend.endpoint "
              "(AI_MODEL_ENDPOINT); run `hapa-lsp doctor` to check.", True),
        _spec("E5006", "Model server rejected the credentials",
              "Set a valid key in HAPA_BACKEND_API_KEY (AI_MODEL_API_KEY) for this endpoint."),
        _spec("E5007", "Model server rate limit reached",
              "The model provider asked us to slow down; requests resume after the time given.", True),
        _spec("E5008", "Malformed model response",
              "The model server sent something that is not a valid response (or the stream broke off); "
              "check that hapa.backend.kind matches the server.", True),
        _spec("E5009", "Model server error",
              "The model server failed (HTTP 5xx); check its logs. The request is retried.", True),
        _spec("E5010", "Model not found",
              "Pull the model (`ollama pull <model>`) or fix hapa.backend.completionModel / chatModel."),
    )
}


def new_incident_id(now: _dt.datetime | None = None) -> str:
    """Make an incident id of the form INC-YYYYMMDD-XXXXXXXX (UTC date, 8 random hex digits)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"INC-{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


class HapaError(Exception):
    """A failure with a catalog code, a remedy and an incident id; the one root of our exceptions.

    The code is the class's (``code``); what a failure is about is in typed fields, set when it is made.
    """

    code: ClassVar[str] = "E5004"

    def __init__(self, detail: str = "", *, field: str | None = None, retry_after: float | None = None,
                 incident_id: str | None = None, model: str = "", fast: bool = False):
        spec = CATALOG[self.code]
        self.spec = spec
        self.detail = detail or spec.title
        #: The request field at fault (``user_profile.style``, ``arguments[1]``), for the client to point at.
        self.field = field
        #: Seconds after which the same request may succeed (rate limits, a model server's Retry-After).
        self.retry_after = retry_after
        self.incident_id = incident_id or new_incident_id()
        #: The model a model-server failure concerns ("" when none).
        self.model = model
        #: Failed without calling the model server (its circuit is open or it asked us to wait).
        self.fast = fast
        #: The incident is recorded (or deliberately not, e.g. a user's cancel): the error boundary leaves it be.
        self.recorded = False
        #: The request id of the generation that failed (its stream chunks carry it), when there was one.
        self.request_id: str | None = None
        super().__init__(self.detail)

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:  # the catalog's own classes; the most specific one defined last wins
            _BY_CODE[cls.code] = cls

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if tried again."""
        return self.spec.retryable

    @property
    def message(self) -> str:
        """The one line a user reads: code, what happened, what to do, incident id."""
        return f"{self.code} {self.spec.title}: {self.detail}. {self.spec.remedy} ({self.incident_id})"

    def to_data(self) -> dict[str, Any]:
        """The JSON-RPC error ``data`` member (and the command error body)."""
        data: dict[str, Any] = {
            "code": self.code,
            "title": self.spec.title,
            "detail": self.detail,
            "remedy": self.spec.remedy,
            "retryable": self.retryable,
            "incident_id": self.incident_id,
        }
        if self.field is not None:
            data["field"] = self.field
        if self.retry_after is not None:
            data["retry_after"] = round(self.retry_after, 3)
        return data


_BY_CODE: dict[str, type[HapaError]] = {"E5004": HapaError}


# ---- E4xxx: the request or the configuration is at fault -----------------------------------------------------------
class InputError(HapaError):
    """The request or configuration is at fault (E4xxx); the family root, E4001 when raised as such."""

    code = "E4001"


class InvalidInput(InputError):
    """A value has the wrong type or is out of range (E4001); ``field`` names it."""

    code = "E4001"


class MissingField(InputError):
    """A required field is missing or blank (E4002); ``field`` names it."""

    code = "E4002"


class InvalidApiKey(InputError):
    """The sidecar was called without the configured key (E4003)."""

    code = "E4003"


class RateLimited(InputError):
    """One of our own rate limits (``hapa.rateLimits``) refused the request (E4004); ``retry_after`` says when."""

    code = "E4004"


class PermissionDenied(InputError):
    """The settings do not allow this operation (E4005)."""

    code = "E4005"


class DocumentNotOpen(InputError):
    """The editor has not opened the document (E4006): the client's state, not an incident."""

    code = "E4006"


class FileExcluded(InputError):
    """``hapa.context.excludeGlobs`` keeps the file from the model (E4007)."""

    code = "E4007"


class Cancelled(InputError):
    """The request was cancelled, by the editor or from the progress indicator (E4008)."""

    code = "E4008"


class ConfigInvalid(InputError):
    """A setting is invalid; its default is used meanwhile (E4009)."""

    code = "E4009"


class UnsupportedLanguage(InputError):
    """The feature is not available for the document's language (E4010)."""

    code = "E4010"


class ValidationFailed(InputError):
    """Generated code failed validation (E4011)."""

    code = "E4011"


class ContextTooLarge(InputError):
    """The code or question does not fit a generation prompt (E4012)."""

    code = "E4012"


# ---- E5xxx: hapa-lsp or a service it uses failed -------------------------------------------------------------------
class CacheUnavailable(HapaError):
    """The shared (Redis) cache failed and is bypassed (E5002)."""

    code = "E5002"


class StorageError(HapaError):
    """The local database could not be used (E5003)."""

    code = "E5003"


class InternalError(HapaError):
    """A bug or an unexpected failure inside hapa-lsp (E5004)."""

    code = "E5004"


class UpstreamError(HapaError):
    """Talking to the model server failed (E5xxx)."""

    code = "E5009"


class ModelUnreachable(UpstreamError):
    """The model server could not be connected to."""

    code = "E5005"


class ModelTimeout(UpstreamError):
    """The model server did not answer in time."""

    code = "E5001"


class UpstreamAuthError(UpstreamError):
    """The model server answered 401 or 403."""

    code = "E5006"


class UpstreamRateLimited(UpstreamError):
    """The model server answered 429; ``retry_after`` holds its Retry-After in seconds."""

    code = "E5007"


class MalformedResponse(UpstreamError):
    """The model server's answer could not be understood, or its stream broke off."""

    code = "E5008"


class ModelNotFound(UpstreamError):
    """The model server does not know the configured model."""

    code = "E5010"


class UpstreamServerError(UpstreamError):
    """The model server answered 5xx."""

    code = "E5009"


def error_class(code: str) -> type[HapaError]:
    """The class of catalog code ``code`` (for codes that come as data, such as a configuration problem's)."""
    return _BY_CODE[code]


def storable_text(text: str) -> str:
    """``text`` unchanged when UTF-8 can encode it, else with what it cannot (lone surrogates, which a client can
    send as JSON escapes such as \\ud800) written as backslash escapes: for field names in messages, and for the
    store."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def as_hapa_error(exc: BaseException) -> HapaError:
    """Return ``exc`` if it is already a HapaError, else wrap it as E5004 without leaking its text."""
    if isinstance(exc, HapaError):
        return exc
    return InternalError(f"unexpected {type(exc).__name__}")
