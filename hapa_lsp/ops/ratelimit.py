"""Per-feature rate limits in the original backend's syntax ("50/minute"), on the `limits` package.

Rules are keyed by command name (``hapa.generateCode``) or LSP method
(``textDocument/inlineCompletion``); anything without a rule gets ``DEFAULT_RATE_LIMIT`` per
``RATE_LIMIT_WINDOW_MINUTES``. A moving window is used so that a burst right after a window
boundary cannot double the allowance.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from hapa_lsp import errors

if TYPE_CHECKING:
    from hapa_lsp.config import RateLimitSettings

#: Rules that apply even when the user's ``rules`` object does not mention them (theirs win).
BUILTIN_RULES: dict[str, str] = {
    "hapa.generateCode": "50/minute",
    "hapa.generateCode.stream": "20/minute",
    "hapa.errors.dashboard": "100/minute",
    "hapa.errors.patterns": "100/minute",
    "hapa.analytics.performance": "100/minute",
    # Model calls of the typing path: inline completions and the AI item of completion lists
    # (jedi's items are never limited; cache hits and superseded requests do not count).
    "textDocument/inlineCompletion": "1200/minute",
}


_IMPORT_LOCK = threading.Lock()


def load_limits() -> Any:
    """The `limits` package, imported once: two threads importing it at the same time can break its import."""
    with _IMPORT_LOCK:
        # deferred: `import limits` costs 50-130 ms and config imports this module; every import goes through this lock
        import limits
        import limits.storage
        import limits.strategies

        return limits


class RateLimiter:
    """Answers "may this feature run now?", re-reading its settings whenever they change."""

    def __init__(self, settings: Callable[[], RateLimitSettings]):
        self._settings = settings
        self._seen: Any = None
        self._limiter: Any = None
        self._items: dict[str, Any] = {}
        self._texts: dict[str, str] = {}
        self._default: Any = None
        self._default_text = ""
        self._exempt: dict[str, bool] = {}
        #: feature -> requests refused or dropped (also exported as metrics by the observer).
        self.limited: Counter[str] = Counter()
        self.observers: list[Callable[[str, bool], None]] = []

    def _configure(self, s: RateLimitSettings) -> None:
        limits = load_limits()
        parse, storage, strategies = limits.parse, limits.storage, limits.strategies
        if self._limiter is None:
            self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        rules = {**BUILTIN_RULES, **s.rules}
        self._items = {k: parse(v) for k, v in rules.items()}
        self._texts = dict(rules)
        self._default_text = f"{s.default}/{s.window_minutes} minutes"
        self._default = parse(self._default_text)
        self._exempt: dict[str, bool] = {}
        self._seen = s

    def prepare(self) -> None:
        """Parse the rules and exemptions now (the start-up warm-up calls this), not on the first keystroke."""
        s = self._settings()
        if s is not self._seen:
            self._configure(s)
        for feature in BUILTIN_RULES:
            if feature not in self._exempt:
                self._exempt[feature] = any(fnmatch.fnmatchcase(feature, p) for p in s.exempt)

    def rule(self, feature: str) -> str:
        """The rule that applies to ``feature``, as text."""
        s = self._settings()
        if s is not self._seen:
            self._configure(s)
        return self._texts.get(feature, self._default_text)

    def rule_names(self) -> set[str]:
        """Features with a rule of their own."""
        s = self._settings()
        return set(BUILTIN_RULES) | set(s.rules)

    def check(self, feature: str, *, quiet: bool = False) -> bool:
        """Count one call of ``feature``; over the limit: False when ``quiet``, else raise E4004 with the wait."""
        s = self._settings()
        if not s.enabled:
            return True
        if s is not self._seen:
            self._configure(s)
        exempt = self._exempt.get(feature)
        if exempt is None:
            exempt = self._exempt[feature] = any(fnmatch.fnmatchcase(feature, p) for p in s.exempt)
        if exempt:
            return True
        item = self._items.get(feature, self._default)
        if self._limiter.hit(item, "hapa", feature):
            return True
        self.limited[feature] += 1
        for obs in self.observers:
            try:
                obs(feature, quiet)
            except Exception:  # noqa: BLE001 - accounting must not change the answer
                pass
        if quiet:
            return False
        reset = self._limiter.get_window_stats(item, "hapa", feature).reset_time
        wait = max(0.0, reset - time.time())
        raise errors.RateLimited(f"{feature} is limited to {self._texts.get(feature, self._default_text)}; "
                                f"try again in {max(1, round(wait))} s", retry_after=wait)

    def reset(self) -> None:
        """Forget every count (tests, and a settings change of the user's own limits)."""
        if self._limiter is not None:
            self._limiter.storage.reset()
