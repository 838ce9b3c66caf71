"""Semantic facts from jedi on a small workspace of modules that import each other."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from hapa_lsp.config import Settings
from hapa_lsp.context.builder import ContextEngine
from hapa_lsp.context.facts import find_uses, imports_of, module_excluded
from hapa_lsp.context.uses import namespace_chains
from hapa_lsp.jedi_client import JediRunner

MODELS = '''\
"""Domain objects."""
from dataclasses import dataclass


@dataclass
class Invoice:
    """A bill sent to one customer."""

    customer: str
    amount_cents: int

    def total_with_tax(self, rate: float) -> int:
        """Amount including tax, rounded to cents."""
        return round(self.amount_cents * (1 + rate))


def load_invoices(path: str, *, strict: bool = False) -> list[Invoice]:
    """Read invoices from a CSV file."""
    return []


DEFAULT_RATE = 0.2
'''

PRICING = '''\
from shop.models import Invoice


def discount(invoice: Invoice, percent: float) -> Invoice:
    """Apply a percentage discount and return a new invoice."""
    return invoice
'''

KEYS = 'STRIPE_SECRET = "sk_live_do_not_leak"\n\ndef signing_key(env: str) -> str:\n    """Never shown."""\n    return STRIPE_SECRET\n'

SERVICE = '''\
import json

import httpx

from shop.models import DEFAULT_RATE, Invoice, load_invoices
from shop.pricing import discount
from shop.secrets.keys import signing_key


class BillingService:
    """Bills customers."""

    def __init__(self, store_path: str):
        self.store_path = store_path
        self.sent = 0

    def send(self, invoice: Invoice) -> str:
        self.sent += 1
        return json.dumps({"customer": invoice.customer})

    def run(self, percent: float):
        invoices = load_invoices(self.store_path, strict=True)
        key = signing_key("prod")
        for inv in invoices:
            cheaper = discount(inv, percent)
            total = cheaper.total_with_tax(DEFAULT_RATE)
            httpx.post(self.store_path, content=json.dumps(total))
            self.
        return key
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ws")
    shop = root / "shop"
    (shop / "secrets").mkdir(parents=True)
    for rel, text in {"__init__.py": "", "models.py": MODELS, "pricing.py": PRICING, "secrets/__init__.py": "",
                      "secrets/keys.py": KEYS, "service.py": SERVICE}.items():
        (shop / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.fixture
async def runner():
    # Function scope: the worker's pipes belong to the event loop of the test that started it.
    r = JediRunner()
    yield r
    await r.aclose()


def _cursor(text: str, marker: str = "self.") -> tuple[int, int]:
    for i, ln in enumerate(text.split("\n")):
        if ln.rstrip().endswith(marker):
            return i, len(ln.rstrip())
    raise AssertionError(marker)


async def _built(workspace: Path, runner, *, settings=None, open_docs=()):
    ce = ContextEngine(settings or Settings(), runner=runner, root=str(workspace))
    path = workspace / "shop" / "service.py"
    text = path.read_text(encoding="utf-8")
    row, col = _cursor(text)
    kw = dict(uri=path.as_uri(), path=str(path), language="python", text=text, line=row, character=col,
              open_docs=open_docs)
    await ce.warm(ce.start(**kw))
    return await ce.build(**kw), ce


async def test_signatures_from_other_workspace_files_stdlib_and_class_outline(workspace, runner):
    built, _ = await _built(workspace, runner)
    prompt = built.prompt.text()
    # Other workspace modules: signature + first docstring line.
    assert "def load_invoices(path: str, *, strict: bool = False) -> list[Invoice]:" in prompt
    assert '"""Read invoices from a CSV file."""' in prompt
    assert "def discount(invoice: Invoice, percent: float) -> Invoice:" in prompt
    assert "class Invoice:" in prompt and '"""A bill sent to one customer."""' in prompt
    assert "DEFAULT_RATE = 0.2" in prompt
    # The standard library (typeshed stubs or sources) and installed packages.
    assert "def dumps(" in prompt
    assert "def post(" in prompt and "httpx/" in prompt
    # The facts come in the model's repository format, each file under its workspace path.
    assert "<|file_sep|>shop/models.py\n" in prompt and prompt.index("<|file_sep|>shop/service.py\n") > \
        prompt.index("<|file_sep|>shop/models.py\n")
    sources = {(p.source, p.where.split(":")[0]) for p in built.pieces}
    assert ("fact", "shop/models.py") in sources and ("fact", "shop/pricing.py") in sources


async def test_excluded_files_never_reach_the_prompt(workspace, runner):
    built, _ = await _built(workspace, runner)
    prompt = built.prompt.text()
    assert "sk_live_do_not_leak" not in prompt
    assert "def signing_key" not in prompt and "Never shown" not in prompt
    assert not any("secrets" in p.where for p in built.pieces if p.source != "prefix")


async def test_excluded_open_document_is_never_a_neighbour(workspace, runner):
    keys = workspace / "shop" / "secrets" / "keys.py"
    docs = [(keys.as_uri(), str(keys), 1, keys.read_text()), ]
    built, _ = await _built(workspace, runner, open_docs=docs)
    assert "sk_live_do_not_leak" not in built.prompt.text()


def test_uses_near_the_cursor_are_ranked_and_self_members_come_from_the_class_outline():
    text = textwrap.dedent(SERVICE)
    row, col = _cursor(text)
    uses = find_uses(text, row, col)
    exprs = [u.expr for u in uses.uses]
    assert exprs.index("discount") < exprs.index("load_invoices")  # 3 lines above the cursor vs. 6
    assert "DEFAULT_RATE" in exprs and "load_invoices" in exprs
    assert not any(e.startswith("self") for e in exprs)
    assert uses.outline is not None
    outline = uses.outline.text
    assert outline.startswith("class BillingService:")
    assert "store_path" in outline and "sent" in outline
    assert "def send(self, invoice: Invoice) -> str: ..." in outline


def test_class_outlines_of_two_documents_never_swap():
    template = textwrap.dedent("""\
        class Handler:
            def {first}(self, x):
                return x

            def {second}(self):
                self.{attr} = 1
                return self.
        """)
    # The same class header at the same row and the same number of lines: only the document tells them apart.
    docs = [("file:///w/doors.py", dict(first="open_door", second="close_door", attr="door")),
            ("file:///w/mail.py", dict(first="fetch_mail", second="send_mail", attr="mail"))]
    ce = ContextEngine(Settings(), runner=None, root="/w")
    for _ in range(2):  # and back again, well within the outline's cache time
        for uri, names in docs:
            text = template.format(**names)
            row, col = _cursor(text)
            req = ce.start(uri=uri, path=uri.removeprefix("file://"), language="python", text=text, line=row,
                           character=col)
            outline = req.uses.outline.text
            assert f"def {names['first']}(self, x): ..." in outline, (uri, outline)
            assert f"def {names['second']}(self): ..." in outline, (uri, outline)
            assert f"# attributes: {names['attr']}" in outline, (uri, outline)


async def test_time_box_returns_what_is_ready_and_the_next_keystroke_has_the_rest(workspace, runner):
    ce = ContextEngine(Settings(), runner=runner, root=str(workspace))
    path = workspace / "shop" / "service.py"
    text = path.read_text(encoding="utf-8").replace("DEFAULT_RATE)", "DEFAULT_RATE) ")
    row, col = _cursor(text)
    kw = dict(uri=path.as_uri() + "#boxed", path=str(path), language="python", text=text, line=row, character=col)
    first = await ce.build(**kw, time_box_ms=0)
    assert first.facts_missing > 0  # nothing waited for: jedi's facts are not there yet...
    # ...but the signature read from the workspace module's text stands in for them.
    static = [p for p in first.pieces if p.source == "static-fact" and "def load_invoices(" in p.text]
    assert static and static[0].where.startswith("shop/"), first.pieces
    await ce.warm(ce.start(**kw))
    second = await ce.build(**kw, time_box_ms=0)
    assert second.facts_missing == 0
    assert any(p.source == "fact" and "def load_invoices(" in p.text for p in second.pieces), second.pieces
    assert not any(p.source == "static-fact" for p in second.pieces)  # jedi's facts replaced them


async def test_names_imported_from_excluded_modules_are_not_resolved(workspace, runner):
    built, ce = await _built(workspace, runner)
    uri = (workspace / "shop" / "service.py").as_uri()
    assert ce.facts._get(uri, "signing_key") == ()  # answered "no facts" without asking jedi to read the file
    globs = ce.facts.exclude_globs
    assert module_excluded(".secrets.keys", str(workspace / "shop" / "service.py"), str(workspace), globs)
    assert not module_excluded("shop.models", str(workspace / "shop" / "service.py"), str(workspace), globs)


async def test_a_document_opened_while_jedi_starts_gets_its_facts_from_a_helper_worker(workspace, runner):
    """The first run on a machine: the jedi worker spends seconds on builtins; the document's imports are resolved
    meanwhile by a helper worker, and their facts are there before the worker answered anything."""
    ce = ContextEngine(Settings(), runner=runner, root=str(workspace))
    path = workspace / "shop" / "service.py"
    text = path.read_text(encoding="utf-8")
    uri = path.as_uri() + "#aside"
    assert runner.starting
    await ce._warm_aside(uri, str(path), text, imports_of(text))
    assert runner.aside_runs == 1
    assert runner.pid is None  # the runner's own worker has not run a job yet
    facts = ce.facts._get(uri, "load_invoices")
    assert facts and any("def load_invoices(path: str" in f.text for f in facts), facts


async def test_the_helper_worker_waits_for_the_typing_path_to_be_warm(workspace, runner):
    """The helper competes for the CPU: it starts only once the typing path's warm-up is done (``after``)."""
    ce = ContextEngine(Settings(), runner=runner, root=str(workspace))
    path = workspace / "shop" / "service.py"
    text = path.read_text(encoding="utf-8")
    ready = asyncio.Event()
    task = asyncio.ensure_future(ce._warm_aside(path.as_uri() + "#after", str(path), text, imports_of(text), ready))
    await asyncio.sleep(0.3)
    assert runner.aside_pid is None and runner.aside_runs == 0  # still waiting for the typing path
    ready.set()
    await asyncio.wait_for(task, 60)
    assert runner.aside_runs == 1


async def test_no_helper_worker_once_the_jedi_worker_has_answered(workspace, runner):
    assert await runner.run("complete", "import os\nos.", "", None, 1, 3, 5, timeout=60.0)
    assert not runner.starting
    ce = ContextEngine(Settings(), runner=runner, root=str(workspace))
    path = workspace / "shop" / "service.py"
    text = path.read_text(encoding="utf-8")
    await ce.warm_document(uri=path.as_uri() + "#warm", path=str(path), language="python", text=text)
    assert runner.aside_runs == 0
    assert ce.facts._get(path.as_uri() + "#warm", "load_invoices")  # the worker's own queue resolved them


def test_namespace_chains_are_attributes_of_imported_names_used_as_namespaces():
    text = ("import os\nimport numpy as np\nfrom shop import models\n\n"
            "a = os.path.join(x, os.path.sep)\nb = np.linalg.norm(v)\nc = self.store.path.x\n"
            "d = models.Invoice.total\ne = os.getcwd()\nf = q.np.linalg.det\n")
    assert namespace_chains(text, imports_of(text)) == ["os.path", "np.linalg"]  # most used first, two at most
    assert namespace_chains(text, imports_of(text), limit=5) == ["os.path", "np.linalg", "models.Invoice"]
