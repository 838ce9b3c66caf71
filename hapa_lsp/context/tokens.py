"""Token counting for prompt budgets: the model's own tokenizer when one is on disk, a calibrated estimate otherwise.

The optional ``tokenizers`` extra reads a ``tokenizer.json`` from ``hapa.context.tokenizerPath`` or from the
Hugging Face cache (``$HF_HUB_CACHE`` / ``$HF_HOME/hub`` / ``~/.cache/huggingface/hub``) when the model's files
are already there. Nothing is ever downloaded. Without a tokenizer, tokens are estimated from characters with
a ratio calibrated for source code (indentation runs are cheap in code tokenizers, so they count less).

Finding and loading a tokenizer.json reads directories and parses megabytes of JSON: ``CounterLoader`` does it
in a worker thread, started when settings are applied, and hands out the estimate until the real counter is
ready, so no keystroke ever waits for it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapa_lsp.log import get_logger

if TYPE_CHECKING:
    from hapa_lsp.config import Settings

# Runs of 4+ spaces are single tokens in the code tokenizers we target (Qwen2.5-Coder, StarCoder2, DeepSeek):
# counting them as one character each would overestimate indented code by 15-25 %.
_INDENT_RUN = re.compile(r" {4,}")
# FIM and repository markers are single special tokens, not their spelling's length.
_SPECIAL = re.compile(r"<\|[a-z_]+\|>|<(?:fim_[a-z]+|file_sep|repo_name)>|\[(?:PREFIX|SUFFIX)\]|<(?:PRE|SUF|MID)>|<｜[^｜]{1,20}｜>")


class TokenCounter:
    """Counts tokens of prompt pieces; ``exact`` is True when a real tokenizer is used."""

    def __init__(self, chars_per_token: float = 3.4, tokenizer: Any = None, source: str = "estimate"):
        self.chars_per_token = max(1.0, float(chars_per_token))
        self._tok = tokenizer
        self.source = source
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """True when counts come from the model's tokenizer."""
        return self._tok is not None

    def count(self, text: str) -> int:
        """Tokens in ``text`` (0 for empty text)."""
        if not text:
            return 0
        if self._tok is not None:
            with self._lock:  # one Rust tokenizer object, whatever thread counts
                return len(self._tok.encode(text, add_special_tokens=False).ids)
        return estimate_tokens(text, self.chars_per_token)

    def chars_for(self, tokens: int) -> int:
        """Characters that roughly fit ``tokens`` (used to cut windows before counting exactly)."""
        return max(0, int(tokens * self.chars_per_token))


def estimate_tokens(text: str, chars_per_token: float = 3.4) -> int:
    """Estimated tokens: characters over the calibrated ratio, with long indentation runs counted once."""
    if len(text) < 2000:
        return _estimate_short(text, chars_per_token)  # facts and paths repeat on every keystroke
    return _estimate(text, chars_per_token)


@lru_cache(maxsize=4096)
def _estimate_short(text: str, chars_per_token: float) -> int:
    return _estimate(text, chars_per_token)


def _estimate(text: str, chars_per_token: float) -> int:
    n = len(text)
    if "    " in text:
        runs = _INDENT_RUN.findall(text)
        n -= len("".join(runs)) - len(runs)
    special = 0
    if "<" in text or "[" in text:
        for m in _SPECIAL.findall(text):
            n -= len(m)
            special += 1
    return special + math.ceil(max(0, n) / chars_per_token)


def _hf_hub_dirs(environ: Mapping[str, str]) -> list[Path]:
    dirs = []
    if environ.get("HF_HUB_CACHE"):
        dirs.append(Path(environ["HF_HUB_CACHE"]))
    if environ.get("HF_HOME"):
        dirs.append(Path(environ["HF_HOME"]) / "hub")
    dirs.append(Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub")
    return dirs


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "", name.lower())


def find_cached_tokenizer(model: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """A tokenizer.json for ``model`` already in the Hugging Face cache, or None (never downloads).

    ``qwen2.5-coder:1.5b-base`` (an Ollama tag) matches ``models--Qwen--Qwen2.5-Coder-1.5B``: the tag's
    punctuation is ignored and a trailing ``-base`` / ``-instruct`` variant is optional.
    """
    environ = os.environ if environ is None else environ
    want = _norm(model.split("/")[-1].replace(":", "-"))
    alt = re.sub(r"(base|instruct|it|chat)$", "", want)
    for hub in _hf_hub_dirs(environ):
        try:
            entries = sorted(hub.iterdir()) if hub.is_dir() else []
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith("models--"):
                continue
            repo = _norm(entry.name.split("--")[-1])
            if repo not in (want, alt):
                continue
            for tj in sorted((entry / "snapshots").glob("*/tokenizer.json")):
                if tj.is_file():
                    return tj
    return None


@lru_cache(maxsize=8)
def _load_tokenizer(path: str, mtime: float) -> Any:
    from tokenizers import Tokenizer  # the optional extra: pip install 'hapa-lsp[tokenizers]'

    return Tokenizer.from_file(path)


def make_counter(*, chars_per_token: float, tokenizer_path: str = "", model: str = "",
                 environ: Mapping[str, str] | None = None) -> TokenCounter:
    """The best counter available: configured tokenizer.json, else the HF cache's, else the estimate."""
    path: Path | None = Path(os.path.expanduser(tokenizer_path)) if tokenizer_path else None
    if path is None and model:
        path = find_cached_tokenizer(model, environ)
    if path is None:
        return TokenCounter(chars_per_token)
    try:
        tok = _load_tokenizer(str(path), path.stat().st_mtime)
    except ImportError:
        get_logger().info("tokenizers not installed; estimating tokens", tokenizer=str(path))
        return TokenCounter(chars_per_token)
    except Exception as exc:  # noqa: BLE001 - a bad tokenizer file must not cost completions
        get_logger().warning("cannot load tokenizer; estimating tokens", tokenizer=str(path),
                             error=f"{type(exc).__name__}: {exc}"[:200])
        return TokenCounter(chars_per_token)
    return TokenCounter(chars_per_token, tok, source=str(path))


class CounterLoader:
    """The token counter for the current settings, loaded off the event loop.

    ``load`` starts discovery and loading of the tokenizer.json for the settings' (tokenizer path, chars per
    token, completion model) in a daemon thread and returns at once; ``current`` is the loaded counter once
    that thread is done, the estimate with the same ratio until then. A settings change starts a new load;
    an older one still running is then simply not used.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._environ = environ
        self._lock = threading.Lock()
        self._key: tuple[str, float, str] | None = None
        self._future: Future[TokenCounter] = Future()
        self._estimate = TokenCounter()

    @staticmethod
    def _settings_key(settings: Settings) -> tuple[str, float, str]:
        c = settings.context
        return c.tokenizer_path, float(c.chars_per_token), settings.backend.completion_model

    def load(self, settings: Settings) -> Future[TokenCounter]:
        """The counter for ``settings``, as a future; starts loading it unless that is done or under way."""
        key = self._settings_key(settings)
        tokenizer_path, chars_per_token, model = key
        with self._lock:
            if key == self._key:
                return self._future
            future: Future[TokenCounter] = Future()
            self._key, self._future, self._estimate = key, future, TokenCounter(chars_per_token)
        if not tokenizer_path and not model:
            future.set_result(self._estimate)  # nothing to look for
        else:
            threading.Thread(target=self._run, args=(future, key), name="hapa-tokenizer", daemon=True).start()
        return future

    def current(self, settings: Settings) -> TokenCounter:
        """The loaded counter for ``settings``, or the estimate while it is loading; never waits."""
        future = self.load(settings)
        if future.done():
            return future.result()
        with self._lock:
            return self._estimate if future is self._future else TokenCounter(settings.context.chars_per_token)

    def _run(self, future: Future[TokenCounter], key: tuple[str, float, str]) -> None:
        tokenizer_path, chars_per_token, model = key
        t0 = time.perf_counter()
        try:
            counter = make_counter(chars_per_token=chars_per_token, tokenizer_path=tokenizer_path, model=model,
                                   environ=self._environ)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable HF cache: estimating is always possible
            get_logger().warning("cannot look for a tokenizer; estimating tokens",
                                 error=f"{type(exc).__name__}: {exc}"[:200])
            counter = TokenCounter(chars_per_token)
        if counter.exact:
            get_logger().info("tokenizer loaded", tokenizer=counter.source, model=model,
                              ms=round((time.perf_counter() - t0) * 1000, 1))
        future.set_result(counter)
