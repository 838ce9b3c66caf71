"""Command arguments as attrs classes: structured with pygls' converter, strict about JSON types, and every
failure E4001 / E4002 naming the field (its path, for nested objects)."""

from __future__ import annotations

from typing import Any

import pytest

from hapa_lsp import errors
from hapa_lsp.features import args as A
from hapa_lsp.server import HapaServer

CONVERTER = HapaServer().protocol.converter


def _fails(data: Any, cls: type, command: str = "hapa.test") -> errors.HapaError:
    with pytest.raises(errors.InputError) as info:
        A.structure(CONVERTER, (data,), cls, command)
    return info.value


@pytest.mark.parametrize(("data", "cls", "error", "field"), [
    ({}, A.GenerateArgs, errors.MissingField, "user_question"),
    ({"user_question": "   "}, A.GenerateArgs, errors.MissingField, "user_question"),
    ({"user_question": 42}, A.GenerateArgs, errors.InvalidInput, "user_question"),
    ({"user_question": "x", "temperature": "hot"}, A.GenerateArgs, errors.InvalidInput, "temperature"),
    ({"user_question": "x", "temperature": 5}, A.GenerateArgs, errors.InvalidInput, "temperature"),
    ({"user_question": "x", "temperature": True}, A.GenerateArgs, errors.InvalidInput, "temperature"),
    ({"user_question": "x", "stream": "yes"}, A.GenerateArgs, errors.InvalidInput, "stream"),
    ({"user_question": "x", "position": {"line": -1, "character": 0}}, A.GenerateArgs, errors.InvalidInput,
     "position.line"),
    ({"user_question": "x", "position": {"line": 0}}, A.GenerateArgs, errors.MissingField, "position.character"),
    ({"user_question": "x", "colour": "red"}, A.GenerateArgs, errors.InvalidInput, "colour"),
    ({"uri": "u", "range": {"start": {"line": 0, "character": 0}, "end": {"line": "2", "character": 0}}},
     A.ExplainArgs, errors.InvalidInput, "range.end.line"),
    ({"uri": "u"}, A.ExplainArgs, errors.MissingField, "range"),
    ({"history_id": "one", "rating": 3}, A.FeedbackArgs, errors.InvalidInput, "history_id"),
    ({"history_id": 0, "rating": 3}, A.FeedbackArgs, errors.InvalidInput, "history_id"),
    ({"rating": [5]}, A.FeedbackArgs, errors.InvalidInput, "rating"),
    ({"page_size": 500}, A.HistoryListArgs, errors.InvalidInput, "page_size"),
    ({"since": "last week"}, A.HistoryListArgs, errors.InvalidInput, "since"),
    ({"confirm": True}, A.CacheClearArgs, errors.MissingField, "cache_type"),
    ({"length": -1}, A.SuggestionEventArgs, errors.InvalidInput, "length"),
])
def test_bad_arguments_name_their_field(data: Any, cls: type, error: type, field: str):
    err = _fails(data, cls)
    assert type(err) is error and err.field == field, (err, err.field)
    assert field.rsplit(".", 1)[-1] in err.detail  # the message says which field too


def test_camel_case_keys_and_nulls_are_accepted():
    a = A.structure(CONVERTER, ({"userQuestion": "sort it", "codeContext": "x = 1", "temperature": None,
                                 "position": {"line": 3, "character": 4}},), A.GenerateArgs, "hapa.generateCode")
    assert (a.user_question, a.code_context, a.temperature, a.stream) == ("sort it", "x = 1", None, True)
    assert (a.position.line, a.position.character) == (3, 4)


def test_times_are_iso_dates_or_epoch_seconds():
    assert A.structure(CONVERTER, ({"since": "2026-01-31"},), A.HistoryListArgs, "x").since == 1769817600.0
    assert A.structure(CONVERTER, ({"since": "2026-01-31T00:00:00Z"},), A.HistoryListArgs, "x").since == 1769817600.0
    assert A.structure(CONVERTER, ({"until": 12},), A.HistoryListArgs, "x").until == 12.0


def test_suggestion_events_ignore_what_editors_add():
    a = A.structure(CONVERTER, ({"requestId": "r1", "uri": "file:///a.py", "editorField": 1, "length": 3},),
                    A.SuggestionEventArgs, "hapa.didShowCompletion")
    assert (a.request_id, a.uri, a.length, a.accepted_length) == ("r1", "file:///a.py", 3, None)


def test_one_json_object_or_nothing():
    assert A.structure(CONVERTER, (), A.HistoryListArgs, "x") == A.HistoryListArgs()
    for args in (("a", "b"), ([1],)):
        with pytest.raises(errors.InvalidInput) as info:
            A.structure(CONVERTER, args, A.HistoryListArgs, "hapa.history.list")
        assert info.value.field == "arguments"


def test_the_strict_converter_is_a_copy_pygls_own_stays_lenient():
    A.structure(CONVERTER, ({"user_question": "x"},), A.GenerateArgs, "x")
    assert CONVERTER.structure(5, str) == "5"  # pygls' converter is not changed by ours
