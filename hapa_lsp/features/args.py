"""Command arguments as attrs classes, structured with pygls' cattrs converter; errors name the field.

A command's single JSON object argument is structured into its class here (``structure``): keys may be camelCase
or snake_case, an unknown key is E4001 naming it, a missing required field E4002, a value of the wrong type or out
of range E4001, each with the field's path (``position.line``) from ``cattrs.transform_error``. The converter is
pygls' own (``HapaProtocol.from_json``'s), made strict: JSON ``5`` is not the string ``"5"``, ``"yes"`` is not
``true``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn

from hapa_lsp import errors

T = TypeVar("T")


# ---- checks (attrs validators raise our errors; the structurer adds the path of the object they are in) -----------
def not_blank(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    """A required text that must not be empty or whitespace (E4002)."""
    if not value.strip():
        raise errors.MissingField(f"the field '{attribute.name}' must not be empty", field=attribute.name)


def in_range(lo: float, hi: float):
    """A number from ``lo`` to ``hi`` (None allowed: the field is optional)."""

    def check(inst: Any, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None and not lo <= value <= hi:
            kind = "a whole number" if "int" in str(attribute.type) else "a number"
            raise errors.InvalidInput(f"'{attribute.name}' must be {kind} from {lo:g} to {hi:g}, got {value!r}",
                                      field=attribute.name)

    return check


def at_least(lo: int):
    """A whole number >= ``lo``."""

    def check(inst: Any, attribute: attrs.Attribute, value: int) -> None:
        if value < lo:
            raise errors.InvalidInput(f"'{attribute.name}' must be a whole number >= {lo}", field=attribute.name)

    return check


def _timestamp(value: Any, _: Any) -> float:
    """An ISO date (2026-01-31, 2026-01-31T12:00:00Z) or epoch seconds, as epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            d = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (d if d.tzinfo else d.replace(tzinfo=_dt.timezone.utc)).timestamp()
    raise TypeError("an ISO date (2026-01-31 or 2026-01-31T12:00:00Z) or epoch seconds")


class Timestamp(float):
    """A point in time given as an ISO date or epoch seconds (structured to epoch seconds)."""


# ---- the argument classes ------------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class PositionArg:
    """An LSP position ``{line, character}``."""

    line: int = attrs.field(validator=at_least(0))
    character: int = attrs.field(validator=at_least(0))


@attrs.frozen(kw_only=True)
class RangeArg:
    """An LSP range ``{start, end}``."""

    start: PositionArg
    end: PositionArg


@attrs.frozen(kw_only=True)
class GenerateArgs:
    """hapa.generateCode."""

    user_question: str = attrs.field(validator=not_blank)
    code_context: str = ""
    language: str = ""
    user_profile: Any = None  # checked by generation.Profile.merged, which names the profile field
    temperature: float | None = attrs.field(default=None, validator=in_range(0.0, 2.0))
    stream: bool = True
    uri: str = ""
    position: PositionArg | None = None


@attrs.frozen(kw_only=True)
class AgentArgs:
    """hapa.agent.run."""

    name: str = attrs.field(validator=not_blank)
    question: str = ""
    code: str = ""
    language: str = ""
    uri: str = ""
    range: RangeArg | None = None
    user_profile: Any = None
    temperature: float | None = attrs.field(default=None, validator=in_range(0.0, 2.0))
    stream: bool = True


@attrs.frozen(kw_only=True)
class ExplainArgs:
    """hapa.explain."""

    uri: str = attrs.field(validator=not_blank)
    range: RangeArg
    user_profile: Any = None
    stream: bool = True


@attrs.frozen(kw_only=True)
class ValidateArgs:
    """hapa.validateCode."""

    code: str
    language: str = ""


@attrs.frozen(kw_only=True)
class HistoryListArgs:
    """hapa.history.list."""

    page: int = attrs.field(default=1, validator=in_range(1, 1_000_000))
    page_size: int = attrs.field(default=20, validator=in_range(1, 200))
    uri: str = ""
    agent: str = ""
    kind: str = ""
    status: str = ""
    since: Timestamp | None = None
    until: Timestamp | None = None


@attrs.frozen(kw_only=True)
class HistoryClearArgs:
    """hapa.history.clear (``confirm`` must be true)."""

    confirm: bool = False
    before: Timestamp | None = None


@attrs.frozen(kw_only=True)
class FeedbackArgs:
    """hapa.feedback: a 1-5 rating ("up" is 5, "down" 1) of a generation or a suggestion."""

    history_id: int | None = attrs.field(default=None, validator=in_range(1, 2**62))
    request_id: str = ""
    rating: int | str | None = None
    comment: str = ""


@attrs.frozen(kw_only=True)
class FeedbackStatsArgs:
    """hapa.feedback.stats."""

    since: Timestamp | None = None


@attrs.frozen(kw_only=True)
class SuggestionEventArgs:
    """hapa.didAcceptCompletion / didShowCompletion / didPartiallyAcceptCompletion (command or notification).

    Unknown keys are allowed: editors send what they have (the accept command's arguments are ours)."""

    request_id: str = ""
    uri: str = ""
    language: str = ""
    model: str = ""
    source: str = ""
    length: int | None = attrs.field(default=None, validator=in_range(0, 10**9))
    accepted_length: int | None = attrs.field(default=None, validator=in_range(0, 10**9))


@attrs.frozen(kw_only=True)
class DocumentArg:
    """``{uri, version}``: a text document, at a version when the client sent one."""

    uri: str = attrs.field(validator=attrs.validators.min_len(1))
    version: int | None = None


@attrs.frozen(kw_only=True)
class InlineEditArgs:
    """textDocument/copilotInlineEdit params: ``{textDocument: {uri, version}, position}``."""

    text_document: DocumentArg
    position: PositionArg


@attrs.frozen(kw_only=True)
class InlineEditShownArgs:
    """textDocument/didShowInlineEdit params: ``{item}``, the edit the editor showed (as it was answered)."""

    item: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class CacheClearArgs:
    """hapa.cache.clear."""

    cache_type: str
    confirm: bool = False


@attrs.frozen(kw_only=True)
class ErrorsPatternsArgs:
    """hapa.errors.patterns."""

    period: str = "7d"


#: Classes whose unknown keys are ignored rather than refused.
LENIENT: frozenset[type] = frozenset({SuggestionEventArgs, InlineEditShownArgs})


# ---- structuring ---------------------------------------------------------------------------------------------------
def _strict(kind: type, what: str):
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise TypeError(what)
        return value

    return hook


def _number(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a number")
    return value


def _rating(value: Any, _: Any) -> int | str:
    if value in ("up", "down") or isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError('1-5, "up" or "down"')


@lru_cache(maxsize=4)
def _strict_converter(base: cattrs.Converter, lenient: bool) -> cattrs.Converter:
    """pygls' converter, strict about JSON types: predicates registered last are asked first, so these win over
    the lenient hooks (``str(5)``, ``bool("no")``) it has for primitives."""
    conv = base.copy(forbid_extra_keys=not lenient, detailed_validation=True)
    # lsprotocol's factory for attrs classes structures with the converter it was made for (and camelCase names):
    # our classes get one bound to this copy, with their own (snake_case) names.
    conv.register_structure_hook_factory(attrs.has, lambda cls: make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=not lenient, _cattrs_detailed_validation=True))
    hooks = {str: _strict(str, "a string"), bool: _strict(bool, "true or false"),
             int: _strict(int, "a whole number"), float: _number, Timestamp: _timestamp}
    for tp, hook in hooks.items():
        conv.register_structure_hook(tp, hook)
        conv.register_structure_hook_func(lambda t, tp=tp: t is tp, hook)
        conv.register_structure_hook_func(lambda t, tp=tp: t == (tp | None),
                                          lambda v, t, hook=hook: None if v is None else hook(v, t))
    conv.register_structure_hook_func(lambda t: t == (int | str | None),
                                      lambda v, t: None if v is None else _rating(v, t))
    return conv


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _normalise(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """camelCase keys as their snake_case fields; nulls dropped (a null is an absent optional field)."""
    names = {a.name for a in attrs.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in names else _snake(key) if isinstance(key, str) else key
        if value is not None:
            out[name if name in names else key] = value
    return out


def structure(base: cattrs.Converter, args: tuple[Any, ...], cls: type[T], command: str) -> T:
    """The command's single JSON object argument (``{}`` when none) as ``cls``; E4001 / E4002 name the field."""
    if not args:
        data: Any = {}
    elif len(args) == 1 and isinstance(args[0], Mapping):
        data = args[0]
    else:
        raise errors.InvalidInput(f"{command} takes one JSON object argument", field="arguments")
    return structure_object(base, data, cls, command)


def structure_object(base: cattrs.Converter, data: Mapping[str, Any], cls: type[T], command: str) -> T:
    """``data`` (one JSON object) as ``cls``, with the errors ``structure`` gives."""
    lenient = cls in LENIENT
    conv = _strict_converter(base, lenient)
    try:
        return conv.structure(_normalise_tree(data, cls), cls)
    except ClassValidationError as exc:
        raise _first_error(exc, cls, command) from None
    except errors.HapaError:
        raise


def _normalise_tree(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    out = _normalise(data, cls)
    for a in attrs.fields(cls):
        inner = _attrs_class(a.type)
        if inner is not None and isinstance(out.get(a.name), Mapping):
            out[a.name] = _normalise_tree(out[a.name], inner)
    return out


def _attrs_class(tp: Any) -> type | None:
    name = tp if isinstance(tp, str) else getattr(tp, "__name__", "")
    for cand in (PositionArg, RangeArg, DocumentArg):
        if cand.__name__ in str(name):
            return cand
    return None


def _first_error(exc: ClassValidationError, cls: type, command: str) -> errors.HapaError:
    found: list[errors.HapaError] = []

    def fmt(e: BaseException, tp: Any) -> str:
        found.append(_one(e, tp))
        return str(len(found) - 1)

    messages = cattrs.transform_error(exc, path="$", format_exception=fmt)
    for message in messages:
        index, _, path = message.partition(" @ ")
        err = found[int(index)]
        where = path.removeprefix("$").lstrip(".")
        if isinstance(err, _Pending):
            return err.at(where, command)
        if err.field and where:
            err.field = f"{where}.{err.field}"
            err.detail = err.detail.replace(f"'{err.field.rsplit('.', 1)[-1]}'", f"'{err.field}'", 1)
        return err
    return errors.InvalidInput(f"{command}: the arguments do not fit", field="arguments")


class _Pending(errors.InvalidInput):
    """A failure whose field path is known only once transform_error placed it."""

    def __init__(self, kind: str, what: str = ""):
        super().__init__(kind)
        self.kind, self.what = kind, what

    def at(self, where: str, command: str) -> errors.HapaError:
        if self.kind == "missing":
            return errors.MissingField(f"the field '{where}' is required", field=where)
        if self.kind == "extra":
            return errors.InvalidInput(f"{command}: '{self.what}' is not a known field", field=self.what)
        return errors.InvalidInput(f"'{where}' must be {self.what}", field=where or "arguments")


def _one(e: BaseException, tp: Any) -> errors.HapaError:
    if isinstance(e, errors.HapaError):
        return e
    if isinstance(e, KeyError):
        return _Pending("missing")
    if isinstance(e, ForbiddenExtraKeysError):
        return _Pending("extra", sorted(e.extra_fields)[0])
    if isinstance(e, TypeError) and str(e) and not str(e).startswith(("__init__", "unhashable")):
        return _Pending("type", str(e))
    if isinstance(e, (TypeError, ValueError, AttributeError)):
        return _Pending("type", f"of type {getattr(tp, '__name__', tp)}")
    return _Pending("type", "valid")
