"""Rate limits in the original syntax: rules from settings and env aliases, E4004 with the wait, quiet drops."""

from __future__ import annotations

import time

import pytest

from hapa_lsp import config, errors
from hapa_lsp.ops.ratelimit import BUILTIN_RULES, RateLimiter


def limiter(environ=None, init=None) -> RateLimiter:
    settings, problems = config.load(environ=environ or {}, init_options=init)
    assert problems == []
    return RateLimiter(lambda: settings.rate_limits)


def test_default_limit_and_window_from_the_original_env_names():
    rl = limiter({"DEFAULT_RATE_LIMIT": "3", "RATE_LIMIT_WINDOW_MINUTES": "10"})
    assert rl.rule("hapa.anything") == "3/10 minutes"
    assert [rl.check("hapa.anything") for _ in range(3)] == [True, True, True]
    with pytest.raises(errors.HapaError) as info:
        rl.check("hapa.anything")
    err = info.value
    assert err.code == "E4004"
    assert 590 < err.retry_after <= 600  # the oldest call leaves the 10-minute window in about 10 minutes
    assert "3/10 minutes" in err.message and "try again in" in err.message
    assert err.to_data()["retry_after"] == pytest.approx(err.retry_after, abs=0.01)
    assert rl.limited["hapa.anything"] == 1


def test_per_feature_rules_in_the_original_syntax_merge_over_builtins():
    rl = limiter(init={"rateLimits": {"rules": {"hapa.generateCode": "2 per minute", "hapa.custom": "1/hour"}}})
    assert rl.rule("hapa.generateCode") == "2 per minute"
    assert rl.rule("hapa.errors.dashboard") == BUILTIN_RULES["hapa.errors.dashboard"] == "100/minute"
    assert rl.check("hapa.generateCode") and rl.check("hapa.generateCode")
    with pytest.raises(errors.HapaError) as info:
        rl.check("hapa.generateCode")
    assert 55 < info.value.retry_after <= 60
    assert rl.check("hapa.custom")
    with pytest.raises(errors.HapaError) as info:
        rl.check("hapa.custom")
    assert info.value.retry_after > 3500


def test_rules_from_the_environment_as_json():
    rl = limiter({"HAPA_RATE_LIMITS_RULES": '{"textDocument/inlineCompletion": "2/minute"}'})
    assert rl.rule("textDocument/inlineCompletion") == "2/minute"


def test_quiet_mode_drops_without_raising_and_counts():
    seen = []
    rl = limiter(init={"rateLimits": {"rules": {"textDocument/inlineCompletion": "2/minute"}}})
    rl.observers.append(lambda feature, quiet: seen.append((feature, quiet)))
    results = [rl.check("textDocument/inlineCompletion", quiet=True) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert rl.limited["textDocument/inlineCompletion"] == 3
    assert seen == [("textDocument/inlineCompletion", True)] * 3


def test_exempt_globs_and_switch_off():
    rl = limiter({"DEFAULT_RATE_LIMIT": "1"})
    assert all(rl.check("hapa.didAcceptCompletion") for _ in range(10))  # matches the default "hapa.did*"
    assert all(rl.check("hapa.health") for _ in range(10))
    assert rl.check("hapa.other")
    with pytest.raises(errors.HapaError):
        rl.check("hapa.other")
    off = limiter({"DEFAULT_RATE_LIMIT": "1", "RATE_LIMIT_ENABLED": "false"})
    assert all(off.check("hapa.other") for _ in range(10))


def test_window_moves_on():
    rl = limiter(init={"rateLimits": {"rules": {"hapa.tick": "1/second"}}})
    assert rl.check("hapa.tick")
    with pytest.raises(errors.HapaError) as info:
        rl.check("hapa.tick")
    assert 0 < info.value.retry_after <= 1
    time.sleep(info.value.retry_after + 0.05)
    assert rl.check("hapa.tick")


def test_settings_change_is_picked_up():
    holder = {"s": config.load(environ={"DEFAULT_RATE_LIMIT": "1"})[0]}
    rl = RateLimiter(lambda: holder["s"].rate_limits)
    assert rl.check("hapa.x")
    assert not rl.check("hapa.x", quiet=True)
    holder["s"] = config.load(environ={"DEFAULT_RATE_LIMIT": "5"})[0]
    assert rl.rule("hapa.x") == "5/60 minutes"
    assert rl.check("hapa.x")


@pytest.mark.parametrize("bad", ["fifty per minute", "50/fortnight", "50", ""])
def test_bad_rules_are_reported_with_e4009_and_defaulted(bad):
    settings, problems = config.load(init_options={"rateLimits": {"rules": {"hapa.generateCode": bad}}})
    assert [p.path for p in problems] == ["hapa.rateLimits.rules"]
    assert "E4009" in problems[0].message and "50/minute" in problems[0].message
    assert settings.rate_limits.rules == BUILTIN_RULES


def test_prepare_parses_the_rules_so_the_first_keystroke_does_not(monkeypatch):
    import fnmatch

    rl = limiter(init={"rateLimits": {"exempt": ["textDocument/*"]}})
    rl.prepare()  # what the start-up warm-up does
    calls: list[str] = []
    monkeypatch.setattr(rl, "_configure", lambda s: calls.append("configure"))
    monkeypatch.setattr(fnmatch, "fnmatchcase", lambda *a: calls.append("fnmatch") or False)
    assert rl.check("textDocument/inlineCompletion") is True  # exempt, decided during prepare
    assert calls == []
