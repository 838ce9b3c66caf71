"""Code actions: offered where they make sense (no model call), resolved into exact, correctly indented edits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytest_asyncio
from pygls.exceptions import JsonRpcException
from lsprotocol import types

from tests.e2e.conftest import editor_capabilities, open_doc, reset_fake, start_client, stop_client
from tests.e2e.test_generate_command import apply_text_edits, attach_editor, edits_for, env_for, run, until
from tests.fakes.model_server import FakeModelServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

FILE_AGENT = "hapa agent: Security review (find risky code) on this file"
AGENTS = [
    {"name": "Security review", "description": "find risky code", "systemPrompt": "You review code for security.",
     "appliesTo": ["selection", "file"]},
    {"name": "Translate", "systemPrompt": "Translate comments to French.", "model": "mistral:7b", "temperature": 0.7,
     "appliesTo": "comment"},
]

SOURCE = '''import os


class Cart:
    def __init__(self):
        self.items = []

    def total(self, prices):
        # sum the price of every item in the cart using the prices mapping
        pass

    def discount(self, rate: float) -> float:
        """Return the total after applying the discount rate."""
        ...

    def clear(self):
        # TODO: empty the cart and return how many items were removed
        return 0
'''


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_fake():
    server = FakeModelServer(model="qwen2.5-coder:7b-instruct")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ws")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_editor(shared_fake, workspace):
    client = attach_editor(await start_client(shared_fake, root=workspace, env=env_for(workspace),
                                              init_options={"agents": {"presets": AGENTS}}))
    try:
        yield client
    finally:
        await stop_client(client)


@pytest_asyncio.fixture(loop_scope="module")
async def fake(shared_fake):
    return reset_fake(shared_fake)


@pytest_asyncio.fixture(loop_scope="module")
async def editor(shared_editor, fake):
    shared_editor.applied.clear()
    shared_editor.chunks.clear()
    return shared_editor


def uri_in(workspace: Path, name: str) -> str:
    return (workspace / name).as_uri()


async def actions_at(client, uri: str, start: tuple[int, int], end: tuple[int, int] | None = None,
                     only: list[str] | None = None, trigger=types.CodeActionTriggerKind.Invoked):
    end = end or start
    result = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri),
        range=types.Range(types.Position(*start), types.Position(*end)),
        context=types.CodeActionContext(diagnostics=[], only=only, trigger_kind=trigger)))
    return [a for a in result or [] if isinstance(a, types.CodeAction)]


def titles(actions) -> list[str]:
    return [a.title for a in actions]


async def test_actions_are_offered_only_where_they_make_sense(editor, fake, workspace):
    uri = uri_in(workspace, "cart.py")
    open_doc(editor, uri, SOURCE)
    # A whole-file agent is offered anywhere in the file, as a source action, after the others.
    assert titles(await actions_at(editor, uri, (8, 12))) == ["hapa: Generate code from comment",
                                                              "hapa agent: Translate", FILE_AGENT]
    assert titles(await actions_at(editor, uri, (7, 8))) == ["hapa: Generate function body", FILE_AGENT]
    assert titles(await actions_at(editor, uri, (12, 10))) == ["hapa: Generate function body", FILE_AGENT]
    assert titles(await actions_at(editor, uri, (11, 8))) == ["hapa: Generate function body", FILE_AGENT]
    assert titles(await actions_at(editor, uri, (16, 20))) == ["hapa: Implement TODO", "hapa agent: Translate",
                                                               FILE_AGENT]
    assert titles(await actions_at(editor, uri, (0, 3))) == [FILE_AGENT]
    assert titles(await actions_at(editor, uri, (5, 10))) == [FILE_AGENT]  # ordinary code
    assert titles(await actions_at(editor, uri, (17, 10))) == [FILE_AGENT]  # a def whose body is real code
    open_doc(editor, uri_in(workspace, "off.py"), "x = 1\n# total = sum(prices.values())\n# print(total)\n")
    assert titles(await actions_at(editor, uri_in(workspace, "off.py"), (1, 4))) == [FILE_AGENT]  # code, off
    assert titles(await actions_at(editor, uri, (8, 12), only=["refactor.rewrite.hapa.generate"])) == [
        "hapa: Generate code from comment"]
    selection = await actions_at(editor, uri, (4, 4), (6, 0))
    assert titles(selection) == ["hapa: Explain", "hapa: Refactor", "hapa: Add docstring and type hints",
                                 "hapa: Write tests", "hapa agent: Security review (find risky code)",
                                 "hapa agent: Security review (find risky code) on this file"]
    kinds = {a.title: a.kind for a in selection}
    assert kinds["hapa: Refactor"] == "refactor.rewrite.hapa.refactor"
    assert kinds["hapa: Write tests"] == "source.hapa.tests"
    # Every listed action (except those that are commands) waits for resolve: no edit yet, no model call.
    assert all(a.edit is None for a in selection)
    only_source = await actions_at(editor, uri, (4, 4), (6, 0), only=["source"])
    assert titles(only_source) == ["hapa: Write tests", "hapa agent: Security review (find risky code) on this file"]
    assert fake.count() == 0


async def test_comment_action_inserts_the_code_below_with_the_comment_indentation(editor, fake, workspace):
    uri = uri_in(workspace, "cart_comment.py")
    text = "class Cart:\n    def total(self, prices):\n        # sum the price of every item using prices\n\n"
    open_doc(editor, uri, text)
    action = (await actions_at(editor, uri, (2, 10)))[0]
    fake.queue("```python\nreturn sum(\n    prices[item] for item in self.items\n)\n```\nSums it.")
    resolved = await editor.code_action_resolve_async(action)
    assert resolved.edit is not None
    new = apply_text_edits(text, edits_for(resolved.edit, uri))
    assert new == ("class Cart:\n    def total(self, prices):\n        # sum the price of every item using prices\n"
                   "        return sum(\n            prices[item] for item in self.items\n        )\n\n")
    assert "# sum the price of every item using prices" in fake.requests[-1].messages[-1]["content"]


async def test_stub_action_replaces_the_function_keeping_decorators(editor, fake, workspace):
    uri = uri_in(workspace, "stub.py")
    text = ("class Cart:\n    @staticmethod\n    def discount(total: float, rate: float) -> float:\n"
            "        \"\"\"Return the total after the discount rate.\"\"\"\n        raise NotImplementedError\n"
            "\n\nx = 1\n")
    open_doc(editor, uri, text)
    action = (await actions_at(editor, uri, (4, 10)))[0]
    fake.queue("```python\n@staticmethod\ndef discount(total: float, rate: float) -> float:\n"
               "    \"\"\"Return the total after the discount rate.\"\"\"\n    return total * (1 - rate)\n```")
    resolved = await editor.code_action_resolve_async(action)
    new = apply_text_edits(text, edits_for(resolved.edit, uri))
    assert new == ("class Cart:\n    @staticmethod\n    def discount(total: float, rate: float) -> float:\n"
                   "        \"\"\"Return the total after the discount rate.\"\"\"\n        return total * (1 - rate)\n"
                   "\n\nx = 1\n")


async def test_todo_action_replaces_the_todo_line(editor, fake, workspace):
    uri = uri_in(workspace, "todo.py")
    text = "def clear(cart):\n    # TODO: empty the cart and return how many items were removed\n    return 0\n"
    open_doc(editor, uri, text)
    action = (await actions_at(editor, uri, (1, 8)))[0]
    fake.queue("```python\nn = len(cart)\ncart.clear()\nreturn n\n```")
    resolved = await editor.code_action_resolve_async(action)
    new = apply_text_edits(text, edits_for(resolved.edit, uri))
    assert new == "def clear(cart):\n    n = len(cart)\n    cart.clear()\n    return n\n    return 0\n"


async def test_refactor_replaces_the_selected_lines_at_their_indentation(editor, fake, workspace):
    uri = uri_in(workspace, "refactor.py")
    text = "def f(xs):\n    out = []\n    for x in xs:\n        out.append(x * 2)\n    return out\n"
    open_doc(editor, uri, text)
    actions = await actions_at(editor, uri, (1, 6), (3, 10))  # a selection starting and ending mid-line
    (action,) = [a for a in actions if a.title == "hapa: Refactor"]
    fake.queue("```python\nout = [x * 2 for x in xs]\n```")
    resolved = await editor.code_action_resolve_async(action)
    new = apply_text_edits(text, edits_for(resolved.edit, uri))
    assert new == "def f(xs):\n    out = [x * 2 for x in xs]\n    return out\n"
    assert "    for x in xs:\n        out.append(x * 2)" in fake.requests[-1].messages[-1]["content"]


async def test_write_tests_creates_the_test_module_when_missing(editor, fake, workspace):
    (workspace / "pkg").mkdir(exist_ok=True)
    uri = uri_in(workspace, "pkg/shop.py")
    text = "def double(x):\n    return 2 * x\n"
    open_doc(editor, uri, text)
    (action,) = [a for a in await actions_at(editor, uri, (0, 0), (1, 16)) if a.title == "hapa: Write tests"]
    fake.queue("```python\nfrom pkg.shop import double\n\n\ndef test_double():\n    assert double(2) == 4\n```")
    resolved = await editor.code_action_resolve_async(action)
    changes = resolved.edit.document_changes
    tests_uri = uri_in(workspace, "tests/test_shop.py")
    assert isinstance(changes[0], types.CreateFile) and changes[0].uri == tests_uri
    (tde,) = [c for c in changes if isinstance(c, types.TextDocumentEdit)]
    assert tde.text_document.uri == tests_uri
    assert apply_text_edits("", tde.edits) == ("from pkg.shop import double\n\n\ndef test_double():\n"
                                               "    assert double(2) == 4\n")
    assert "module `pkg.shop`" in fake.requests[-1].messages[-1]["content"]


async def test_write_tests_appends_to_an_existing_test_module(editor, fake, workspace):
    (workspace / "tests").mkdir(exist_ok=True)
    existing = "import pytest\n"
    (workspace / "tests" / "test_tax.py").write_text(existing)
    uri = uri_in(workspace, "tax.py")
    open_doc(editor, uri, "def tax(x):\n    return x * 0.2\n")
    (action,) = [a for a in await actions_at(editor, uri, (0, 0), (1, 10)) if a.title == "hapa: Write tests"]
    fake.queue("```python\ndef test_tax():\n    assert tax(10) == 2\n```")
    resolved = await editor.code_action_resolve_async(action)
    tests_uri = uri_in(workspace, "tests/test_tax.py")
    assert not any(isinstance(c, types.CreateFile) for c in resolved.edit.document_changes or [])
    edits = edits_for(resolved.edit, tests_uri)
    assert apply_text_edits(existing, edits) == "import pytest\n\n\ndef test_tax():\n    assert tax(10) == 2\n"


async def test_explain_shows_a_markdown_document_and_leaves_the_source_alone(editor, fake, workspace):
    uri = uri_in(workspace, "explain.py")
    open_doc(editor, uri, "def f(xs):\n    return sorted(set(xs))\n")
    (listed,) = [a for a in await actions_at(editor, uri, (0, 0), (1, 10)) if a.title == "hapa: Explain"]
    action = await editor.code_action_resolve_async(listed)
    assert action.command is not None and action.edit is None
    fake.queue("It removes duplicates and sorts the result.")
    result = await run(editor, action.command.command, *action.command.arguments)
    assert result["status"] == "success"
    await until(lambda: editor.shown_documents)
    shown = editor.shown_documents[-1].uri
    assert shown == result["document_uri"] and shown.endswith(".md")
    from pygls.uris import to_fs_path

    assert "It removes duplicates and sorts the result." in Path(to_fs_path(shown)).read_text()
    assert editor.applied == []


async def test_dangerous_generated_code_is_flagged_in_the_action(editor, fake, workspace):
    uri = uri_in(workspace, "danger.py")
    text = "import subprocess\n\n\ndef run(cmd):\n    # run the given shell command and return its output\n"
    open_doc(editor, uri, text)
    action = (await actions_at(editor, uri, (4, 8)))[0]
    fake.queue("```python\nreturn subprocess.check_output(cmd, shell=True)\n```")
    resolved = await editor.code_action_resolve_async(action)
    assert "⚠" in resolved.title and "shell-true" in resolved.title
    assert resolved.command is not None and resolved.command.command == "hapa.showIssues"
    await run(editor, resolved.command.command, *resolved.command.arguments)
    await until(lambda: editor.diagnostics.get(uri))
    (diag,) = editor.diagnostics[uri]
    assert diag.code == "shell-true" and diag.range.start == types.Position(5, 11)


async def test_broken_code_is_rejected_by_resolve_with_e4011(editor, fake, workspace):
    uri = uri_in(workspace, "broken.py")
    open_doc(editor, uri, "# compute the factorial of n recursively\n")
    action = (await actions_at(editor, uri, (0, 3)))[0]
    fake.queue("```python\ndef fact(n)\n```", "```python\ndef fact(n:\n```")
    from pygls.exceptions import JsonRpcException

    with pytest.raises(JsonRpcException) as info:
        await editor.code_action_resolve_async(action)
    assert info.value.data["code"] == "E4011"
    assert fake.count("/api/chat") == 2


async def test_agents_are_listed_offered_and_run(editor, fake, workspace):
    listed = await run(editor, "hapa.agent.list")
    assert [a["name"] for a in listed["agents"]] == ["Security review", "Translate"]
    assert listed["agents"][1] == {"name": "Translate", "description": "", "model": "mistral:7b",
                                   "temperature": 0.7, "applies_to": ["comment"]}
    uri = uri_in(workspace, "agent.py")
    text = "def f():\n    # compute the answer to everything here\n    return 42\n"
    open_doc(editor, uri, text)
    on_comment = await actions_at(editor, uri, (1, 8))
    assert titles(on_comment) == ["hapa: Generate code from comment", "hapa agent: Translate", FILE_AGENT]
    fake.queue("```python\n# calculer la réponse à tout ici\n```")
    resolved = await editor.code_action_resolve_async(on_comment[1])
    req = fake.requests[-1]
    assert req.json["model"] == "mistral:7b" and req.json["options"]["temperature"] == 0.7
    assert "Translate comments to French." in req.messages[0]["content"]
    assert apply_text_edits(text, edits_for(resolved.edit, uri)) == (
        "def f():\n    # compute the answer to everything here\n    # calculer la réponse à tout ici\n"
        "    return 42\n")
    # hapa.agent.run on a range replaces it and applies the edit through workspace/applyEdit.
    fake.queue("```python\nreturn int('42')\n```")
    result = await run(editor, "hapa.agent.run", {"name": "Security review", "uri": uri, "stream": False,
                                                  "range": {"start": {"line": 2, "character": 0},
                                                            "end": {"line": 2, "character": 13}}})
    assert result["status"] == "success" and result["agent"] == "Security review" and result["applied"] is True
    assert "You review code for security." in fake.requests[-1].messages[0]["content"]
    assert apply_text_edits(text, edits_for(editor.applied[-1].edit, uri)).endswith("    return int('42')\n")
    # A whole-file agent answers in prose: the action resolves to a command that shows the answer.
    file_action = (await actions_at(editor, uri, (0, 0)))[-1]
    assert file_action.title == FILE_AGENT
    resolved = await editor.code_action_resolve_async(file_action)
    assert resolved.edit is None and resolved.command.command == "hapa.agent.run"
    fake.queue("No security problems found in this file.")
    shown_before = len(editor.shown_documents)
    result = await run(editor, resolved.command.command, *resolved.command.arguments)
    assert result["status"] == "success" and result["explanation"] == "No security problems found in this file."
    assert "def f():" in fake.requests[-1].messages[-1]["content"]
    await until(lambda: len(editor.shown_documents) > shown_before)
    assert editor.shown_documents[-1].uri == result["document_uri"]
    from pygls.exceptions import JsonRpcException

    with pytest.raises(JsonRpcException) as info:
        await run(editor, "hapa.agent.run", {"name": "Nobody", "code": "x = 1"})
    assert info.value.data["code"] == "E4001" and info.value.data["field"] == "name"


async def test_resolving_an_action_for_a_changed_document_is_refused(editor, fake, workspace):
    from pygls.exceptions import JsonRpcException

    from tests.e2e.conftest import type_text

    uri = uri_in(workspace, "stale.py")
    open_doc(editor, uri, "# parse the config file and return a dict\n")
    action = (await actions_at(editor, uri, (0, 4)))[0]
    type_text(editor, uri, 0, 0, "import json\n", version=2)
    with pytest.raises(JsonRpcException) as info:
        await editor.code_action_resolve_async(action)
    assert info.value.data["code"] == "E4001" and info.value.data["field"] == "data.version"
    assert fake.count() == 0


async def test_clients_without_resolve_get_the_edit_eagerly(fake, tmp_path):
    caps = copy.deepcopy(editor_capabilities())
    caps.text_document.code_action.resolve_support = None
    client = attach_editor(await start_client(fake, root=tmp_path, env=env_for(tmp_path), capabilities=caps))
    try:
        uri = (tmp_path / "eager.py").as_uri()
        text = "# return the larger of two numbers a and b\n"
        open_doc(client, uri, text)
        automatic = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri), range=types.Range(types.Position(0, 4),
                                                                               types.Position(0, 4)),
            context=types.CodeActionContext(diagnostics=[], trigger_kind=types.CodeActionTriggerKind.Automatic)))
        # Offered as a command to run on choice (lsprotocol reads any action with a command as a Command).
        assert automatic and all(getattr(a, "edit", None) is None for a in automatic)
        assert fake.count() == 0  # a light bulb never costs a model call
        fake.queue("```python\ndef larger(a, b):\n    return max(a, b)\n```")
        (action,) = await actions_at(client, uri, (0, 4))
        assert action.edit is not None and action.data is None
        assert apply_text_edits(text, edits_for(action.edit, uri)) == (
            text + "def larger(a, b):\n    return max(a, b)\n")
    finally:
        await stop_client(client)


async def test_clients_without_resolve_get_a_menu_of_several_actions_without_model_calls(fake, tmp_path):
    """eglot 1.9 (no codeAction/resolve) asks explicitly; with several actions on offer, none is generated before
    the user picks one: each runs on choice and its edit comes through workspace/applyEdit."""
    caps = copy.deepcopy(editor_capabilities())
    caps.text_document.code_action.resolve_support = None
    client = attach_editor(await start_client(fake, root=tmp_path, env=env_for(tmp_path), capabilities=caps))
    try:
        uri = (tmp_path / "menu.py").as_uri()
        open_doc(client, uri, SOURCE)
        result = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=types.Range(types.Position(4, 4), types.Position(6, 0)),
            context=types.CodeActionContext(diagnostics=[])))  # no triggerKind, as eglot 1.9 sends it
        by_title = {a.title: a for a in result}
        assert {"hapa: Refactor", "hapa: Add docstring and type hints", "hapa: Write tests"} <= set(by_title)
        assert all(getattr(a, "edit", None) is None for a in result)
        assert fake.count() == 0  # the menu costs no generation
        listed = by_title["hapa: Refactor"]
        if isinstance(listed, types.CodeAction):
            refactor = listed.command
        else:  # lsprotocol reads {title, kind, command: {...}} as a Command whose `command` is the dict's repr
            import ast

            refactor = types.Command(**ast.literal_eval(listed.command))
        assert refactor.command == "hapa.codeAction.apply"
        fake.queue("```python\ndef total(self, prices):\n    return sum(prices.values())\n```")
        applied = await run(client, refactor.command, *refactor.arguments)
        assert applied == {"applied": True}
        assert fake.count() == 1  # the chosen action only
        assert "return sum(prices.values())" in apply_text_edits(SOURCE, edits_for(client.applied[-1].edit, uri))
    finally:
        await stop_client(client)


async def test_comment_actions_work_in_other_languages(editor, fake, workspace):
    uri = uri_in(workspace, "sum.js")
    text = "function total(xs) {\n  // add up the numbers in xs and return the sum\n}\n"
    open_doc(editor, uri, text, language="javascript")
    actions = await actions_at(editor, uri, (1, 6))
    assert titles(actions)[0] == "hapa: Generate code from comment"
    fake.queue("```javascript\nreturn xs.reduce((a, b) => a + b, 0);\n```")
    resolved = await editor.code_action_resolve_async(actions[0])
    assert apply_text_edits(text, edits_for(resolved.edit, uri)) == (
        "function total(xs) {\n  // add up the numbers in xs and return the sum\n"
        "  return xs.reduce((a, b) => a + b, 0);\n}\n")
    assert "```javascript" in fake.requests[-1].messages[0]["content"]


async def test_cancelling_a_resolve_closes_the_upstream_stream(editor, fake, workspace):
    import asyncio

    from pygls.exceptions import JsonRpcException

    uri = uri_in(workspace, "slow.py")
    open_doc(editor, uri, "# build a very long report of everything\n")
    action = (await actions_at(editor, uri, (0, 4)))[0]
    fake.token_delay = 0.05
    fake.queue("```python\n" + "x = 1\n" * 200 + "```")
    task = asyncio.ensure_future(editor.protocol.send_request_async(types.CODE_ACTION_RESOLVE, action,
                                                                    msg_id="resolve-cancel-1"))
    await until(lambda: editor.chunks)
    editor.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="resolve-cancel-1"))
    with pytest.raises(JsonRpcException):
        await asyncio.wait_for(task, 5)
    record = await fake.wait_for_disconnect(timeout=3)
    assert not record.completed


async def test_code_action_generations_count_against_the_generation_rate_limit(fake, tmp_path):
    """Resolve, and the eager path of clients without resolve, both spend hapa.generateCode's allowance."""
    client = attach_editor(await start_client(fake, root=tmp_path, env=env_for(tmp_path),
                                              init_options={"rateLimits": {"rules": {"hapa.generateCode": "1/minute"}}}))
    try:
        uri = (tmp_path / "limited.py").as_uri()
        open_doc(client, uri, "# add two numbers and return the sum\n\n# subtract two numbers and return it\n")
        fake.queue("```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef sub(a, b):\n    return a - b\n```")
        first = (await actions_at(client, uri, (0, 5)))[0]
        assert (await client.code_action_resolve_async(first)).edit is not None
        second = (await actions_at(client, uri, (2, 5)))[0]
        with pytest.raises(JsonRpcException) as info:
            await client.code_action_resolve_async(second)
        assert info.value.data["code"] == "E4004"
    finally:
        await stop_client(client)
