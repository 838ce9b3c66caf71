"""Code generation: personalised chat prompts, agents, the streaming model call, validation and one repair round.

Used by ``features/generate.py`` and ``features/code_actions.py`` (through ``features/running.py``) and by
``hapa-lsp generate``; it talks to the model through ``hapa_lsp.upstream.Upstream``, the same backend, cache
and accounting the typing path (``engine.py``) uses, and knows nothing about LSP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hapa_lsp import errors
from hapa_lsp.cache import digest
from hapa_lsp.prompts import ChatMessage
from hapa_lsp.validation import Report, validate

if TYPE_CHECKING:
    from hapa_lsp.config import Agent, ProfileSettings, Settings
    from hapa_lsp.upstream import Upstream

SKILL_LEVELS = ("beginner", "intermediate", "advanced", "expert")
OUTPUT_STRUCTURES = ("minimal", "standard", "detailed")
EXPLANATION_STYLES = ("brief", "standard", "detailed", "educational")

# What each profile value asks of the model; the differences are meant to be visible in the output.
SKILL_GUIDE = {
    "beginner": "The user is a beginner. Write simple, explicit code with descriptive names. Put a short comment "
                "above every step saying what it does and why, in plain words. Avoid clever idioms (nested "
                "comprehensions, walrus, metaprogramming); if you use a library function, say what it does.",
    "intermediate": "The user is an intermediate programmer. Write clear idiomatic code with type hints on "
                    "function signatures; comment the parts that are not obvious.",
    "advanced": "The user is an advanced programmer. Write idiomatic, fully type-hinted code using the standard "
                "library well; comment only intent that the code cannot show.",
    "expert": "The user is an expert. Write terse, idiomatic, fully type-hinted code. No comments that restate "
              "the code, no explanations of basics.",
}
STRUCTURE_GUIDE = {
    "minimal": "Output only the code that was asked for: no docstrings, no usage examples, no tests.",
    "standard": "Give each public function or class a one-line docstring.",
    "detailed": "Give each public function or class a full docstring (summary, Args, Returns, Raises) and "
                "validate inputs with clear error messages.",
}
STYLE_GUIDE = {
    "brief": "After the code block, explain it in one sentence.",
    "standard": "After the code block, explain the approach in a short paragraph.",
    "detailed": "After the code block, explain the approach, the edge cases handled and the complexity.",
    "educational": "After the code block, teach: walk through the code step by step, name the concepts it uses, "
                   "and end with one small exercise for the reader.",
}


@dataclass(frozen=True, slots=True)
class Profile:
    """A user profile: skill level, output structure and explanation style."""

    python_skill_level: str = "intermediate"
    code_output_structure: str = "standard"
    explanation_style: str = "standard"

    @classmethod
    def from_settings(cls, p: ProfileSettings) -> Profile:
        """The profile configured in settings (``hapa.profile``)."""
        return cls(p.python_skill_level, p.code_output_structure, p.explanation_style)

    def merged(self, override: Any, field_prefix: str = "user_profile") -> Profile:
        """This profile with the fields of a command's ``user_profile`` object applied; E4001 names a bad field."""
        if override is None:
            return self
        if not isinstance(override, Mapping):
            raise errors.InvalidInput(f"{field_prefix} must be an object", field=field_prefix)
        allowed = {"pythonSkillLevel": ("python_skill_level", SKILL_LEVELS),
                   "codeOutputStructure": ("code_output_structure", OUTPUT_STRUCTURES),
                   "explanationStyle": ("explanation_style", EXPLANATION_STYLES)}
        snake = {v[0]: (k, v[1]) for k, v in allowed.items()}
        out = self
        for key, value in override.items():
            if key in allowed:
                attr, options = allowed[key]
                name = key
            elif key in snake:
                attr, (name, options) = key, snake[key]
            else:
                raise errors.InvalidInput(f"{field_prefix}.{key} is not a profile field (expected "
                                        f"{', '.join(allowed)})", field=f"{field_prefix}.{key}")
            if value not in options:
                raise errors.InvalidInput(f"{field_prefix}.{name} must be one of {', '.join(options)}, got {value!r}", field=f"{field_prefix}.{name}")
            out = replace(out, **{attr: value})
        return out

    def to_dict(self) -> dict[str, str]:
        """The profile with the original backend's field names."""
        return {"pythonSkillLevel": self.python_skill_level, "codeOutputStructure": self.code_output_structure,
                "explanationStyle": self.explanation_style}


# ---- prompts ------------------------------------------------------------------------------------------------------
TASKS = ("generate", "implement", "explain", "refactor", "document", "tests", "agent")
CODE_TASKS = frozenset(("generate", "implement", "refactor", "document", "tests", "agent"))


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: the task, what it is about, and for whom."""

    task: str
    question: str = ""
    code_context: str = ""
    target: str = ""  # the code the task acts on: selection, stub, comment
    language: str = "python"
    path: str = ""
    module: str = ""  # dotted module name, for tests
    profile: Profile = field(default_factory=Profile)
    agent: Agent | None = None
    temperature: float | None = None
    prose: bool = False  # the answer is Markdown for the user to read, not code for the file

    @property
    def wants_code(self) -> bool:
        """Whether the answer is code to insert (and so is validated)."""
        return self.task in CODE_TASKS and not self.prose


def _fence(language: str) -> str:
    return language if re.fullmatch(r"[A-Za-z0-9_+-]+", language or "") else ""


def system_prompt(req: GenerationRequest) -> str:
    """The system message: role, the profile's guidance and the answer format."""
    lang = req.language or "python"
    parts = [f"You are an expert {lang} programmer working inside the user's editor."]
    if req.agent is not None:
        parts.append(req.agent.system_prompt.strip())
    p = req.profile
    parts.append(SKILL_GUIDE[p.python_skill_level])
    if req.task != "explain":
        parts.append(STRUCTURE_GUIDE[p.code_output_structure])
    if not req.wants_code:
        parts.append("Answer in Markdown. " + STYLE_GUIDE[p.explanation_style].replace("After the code block, ", ""))
    else:
        parts.append(f"Answer with exactly one fenced code block (```{_fence(lang)}) holding the complete code, "
                     "then the explanation as plain text. " + STYLE_GUIDE[p.explanation_style])
    return "\n".join(parts)


def _block(code: str, language: str) -> str:
    return f"```{_fence(language)}\n{code.rstrip()}\n```"


def user_prompt(req: GenerationRequest) -> str:
    """The user message for the task."""
    lang = req.language
    where = f" (file {req.path})" if req.path else ""
    ctx = f"\n\nSurrounding code{where}:\n{_block(req.code_context, lang)}" if req.code_context.strip() else ""
    t = req.task
    if t == "generate":
        return f"{req.question.strip()}{ctx}"
    if t == "implement":
        return (f"Write the {lang} code that this describes, so it can replace it in the file; keep the "
                f"existing function names and signatures:\n{_block(req.target, lang)}{ctx}")
    if t == "explain":
        return f"Explain what this code does{where}:\n{_block(req.target, lang)}{ctx}"
    if t == "refactor":
        return (f"Refactor this code for readability and idiom without changing its behaviour or its public "
                f"names:\n{_block(req.target, lang)}{ctx}")
    if t == "document":
        return (f"Add docstrings and type hints to this code; change nothing else:\n"
                f"{_block(req.target, lang)}{ctx}")
    if t == "tests":
        mod = f" It lives in module `{req.module}`; import what you test from there." if req.module else ""
        return (f"Write pytest tests for this code.{mod} Output a complete test module (imports included), "
                f"covering normal cases and edge cases:\n{_block(req.target, lang)}")
    if t == "agent":
        body = req.question.strip()
        if req.target.strip():
            body = (body + "\n\n" if body else "") + _block(req.target, lang)
        return (body or "Apply your instructions.") + ctx
    raise ValueError(f"unknown task {t!r}")


def build_messages(req: GenerationRequest) -> list[ChatMessage]:
    """The chat messages for ``req``."""
    return [ChatMessage("system", system_prompt(req)), ChatMessage("user", user_prompt(req))]


def repair_messages(messages: list[ChatMessage], answer: str, problem: str, language: str) -> list[ChatMessage]:
    """The follow-up asking the model to fix code that does not parse."""
    return [*messages, ChatMessage("assistant", answer),
            ChatMessage("user", f"The code in your answer does not parse: {problem}. Reply with the corrected "
                                f"complete code in one fenced ```{_fence(language)} block, then the explanation.")]


# ---- answers --------------------------------------------------------------------------------------------------------
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)


def split_answer(text: str) -> tuple[str, str]:
    """(code, explanation): the first fenced block is the code, the prose around it the explanation.

    An answer without a fence is all code; an unterminated fence (a cut stream) counts up to the end.
    """
    m = _FENCE.search(text)
    if m is None:
        open_ = re.search(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n", text, re.M)
        if open_ is None:
            return text.strip("\n"), ""
        return text[open_.end():].rstrip(), text[:open_.start()].strip()
    code = m.group(2).rstrip("\n")
    explanation = (text[:m.start()].strip() + "\n\n" + text[m.end():].strip()).strip()
    return code, explanation




# ---- the model call ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Generation:
    """What one generation produced."""

    code: str
    explanation: str
    raw: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ms: float = 0.0
    first_chunk_ms: float | None = None
    before_upstream_ms: float = 0.0
    report: Report | None = None
    repaired: bool = False
    cached: bool = False
    messages: list[ChatMessage] = field(default_factory=list)
    request_id: str = ""  # the id carried by this generation's hapa/streamChunk notifications


class GenerationRejected(errors.ValidationFailed):
    """The model's code still failed validation after the repair round (E4011); carries the last attempt."""

    def __init__(self, detail: str, generation: Generation):
        super().__init__(detail)
        self.generation = generation


OnText = Callable[[str], None]


async def chat(upstream: Upstream, settings: Settings, messages: list[ChatMessage], *, model: str,
               temperature: float, on_text: OnText | None = None, t_start: float | None = None) -> Generation:
    """Stream one chat answer (cached in region ``code_generation``), calling ``on_text`` with the text so far."""
    b = settings.backend
    t0 = t_start if t_start is not None else time.perf_counter()
    key = digest("chat", b.kind, b.endpoint, model, b.chat_max_tokens, temperature,
                 *[(m.role, m.content) for m in messages])
    cached = await upstream.cache.aget("code_generation", key)  # the shared Redis level too, when configured
    upstream.emit("cache", hit=cached is not None, region="code_generation")
    if cached is not None:
        if on_text is not None:
            on_text(cached["raw"])
        code, expl = split_answer(cached["raw"])
        return Generation(code, expl, cached["raw"], model, cached["prompt_tokens"], cached["completion_tokens"],
                          (time.perf_counter() - t0) * 1000, cached=True, messages=messages)
    parts: list[str] = []
    first: float | None = None
    t_up = time.perf_counter()
    async with upstream.call(model, "generation") as usage, aclosing(upstream.backend.stream_chat(
            messages, model=model, max_tokens=b.chat_max_tokens, temperature=temperature, usage=usage,
            timeout=b.request_timeout)) as stream:
        async for delta in stream:
            if first is None:
                first = time.perf_counter()
            parts.append(delta)
            if on_text is not None:
                on_text("".join(parts))
    raw = "".join(parts)
    completion_tokens = usage.completion_tokens or usage.chunks
    if raw.strip():
        upstream.cache.put("code_generation", key, {"raw": raw, "prompt_tokens": usage.prompt_tokens,
                                                    "completion_tokens": completion_tokens})
    code, expl = split_answer(raw)
    now = time.perf_counter()
    return Generation(code, expl, raw, model, usage.prompt_tokens, completion_tokens, (now - t0) * 1000,
                      first_chunk_ms=(first - t0) * 1000 if first is not None else None,
                      before_upstream_ms=(t_up - t0) * 1000, messages=messages)


def model_and_temperature(settings: Settings, req: GenerationRequest) -> tuple[str, float]:
    """The chat model and temperature: the request's, else the agent's, else the settings'."""
    model = (req.agent.model if req.agent is not None and req.agent.model else "") or settings.backend.chat_model
    temp = req.temperature
    if temp is None and req.agent is not None and req.agent.temperature is not None:
        temp = req.agent.temperature
    return model, settings.backend.temperature if temp is None else temp


async def generate(upstream: Upstream, settings: Settings, req: GenerationRequest, on_text: OnText | None = None) -> Generation:
    """Run ``req``: prompt, stream, validate; one repair round for code that does not parse, then E4011."""
    t0 = time.perf_counter()
    messages = build_messages(req)
    model, temperature = model_and_temperature(settings, req)
    gen = await chat(upstream, settings, messages, model=model, temperature=temperature, on_text=on_text, t_start=t0)
    if not req.wants_code:
        return gen
    if not gen.code.strip():
        raise GenerationRejected("the model answered without any code", gen)
    gen.report = validate(gen.code, req.language)
    if gen.report.parses:
        return gen
    problem = gen.report.syntax_error.describe() if gen.report.syntax_error else "invalid syntax"
    fixed = await chat(upstream, settings, repair_messages(messages, gen.raw, problem, req.language), model=model,
                       temperature=temperature, on_text=on_text)
    fixed.report = validate(fixed.code, req.language)
    fixed.repaired = True
    fixed.prompt_tokens += gen.prompt_tokens
    fixed.completion_tokens += gen.completion_tokens
    fixed.ms = (time.perf_counter() - t0) * 1000
    fixed.first_chunk_ms = gen.first_chunk_ms
    fixed.before_upstream_ms = gen.before_upstream_ms
    if not fixed.report.parses:
        detail = fixed.report.syntax_error.describe() if fixed.report.syntax_error else "invalid syntax"
        raise GenerationRejected(f"the generated code does not parse even after one repair ({detail})", fixed)
    return fixed


# ---- command line: `hapa-lsp generate "question"` -------------------------------------------------------------------
