"""The context engine end to end: the model server receives definitions from other files of the workspace."""

from __future__ import annotations

import pytest
from pygls.exceptions import JsonRpcException

from tests.e2e.conftest import inline_params, open_doc, start_client, stop_client, type_text

GEOMETRY = '''\
def rectangle_area(width: float, height: float) -> float:
    """Area of an axis-aligned rectangle."""
    return width * height
'''

APP = '''\
from shapes.geometry import rectangle_area


def floor_plan(rooms):
    total = 0.0
    for w, h in rooms:
        total += rectangle_area(w, h)
    
    return total
'''

BILLING = '''\
def invoice_for_floor_plan(rooms, price_per_square_metre):
    area = sum(w * h for w, h in rooms)
    return round(area * price_per_square_metre, 2)
'''


async def test_prompt_carries_definitions_from_other_files_and_open_neighbours(fake, tmp_path):
    pkg = tmp_path / "shapes"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "geometry.py").write_text(GEOMETRY)
    app = pkg / "app.py"
    app.write_text(APP)
    # A generous time box: this test is about what the prompt contains, not about a cold jedi's speed.
    client = await start_client(fake, root=tmp_path, env={"HAPA_CONTEXT_FACTS_TIME_BUDGET_MS": "5000"})
    try:
        fake.queue("total = round(total, 2)\n")
        open_doc(client, app.as_uri(), APP)
        open_doc(client, (tmp_path / "billing.py").as_uri(), BILLING)  # unsaved, only in the editor
        open_doc(client, (tmp_path / ".env").as_uri(), "FLOOR_PLAN_API_KEY=sk-never-in-a-prompt\n",
                 language="dotenv")
        result = await client.text_document_inline_completion_async(inline_params(app.as_uri(), 7, 4, invoked=True))
        assert result is not None and result.items[0].insert_text == "total = round(total, 2)"
        prompt = fake.requests[-1].json["prompt"]
        # Qwen2.5-Coder's repository format, the other file's signature and docstring before the document.
        assert prompt.startswith(f"<|repo_name|>{tmp_path.name}\n")
        assert "<|file_sep|>shapes/geometry.py\ndef rectangle_area(width: float, height: float) -> float:\n" \
               '    """Area of an axis-aligned rectangle."""' in prompt
        assert "def invoice_for_floor_plan(rooms, price_per_square_metre):" in prompt  # the open neighbour
        assert "sk-never-in-a-prompt" not in prompt
        assert prompt.index("<|file_sep|>shapes/app.py\n<|fim_prefix|>from shapes.geometry") > \
            prompt.index("def rectangle_area")
        assert prompt.endswith("<|fim_suffix|>\n    return total\n<|fim_middle|>")

        # An excluded file is never completed; an explicit request says why with the catalog code.
        with pytest.raises(JsonRpcException) as err:
            await client.text_document_inline_completion_async(
                inline_params((tmp_path / ".env").as_uri(), 0, 5, invoked=True))
        assert "E4007" in str(err.value)
    finally:
        await stop_client(client)


UTILS = '''\
"""Helpers of the shop."""


def parse_money(text: str, *, currency: str = "EUR") -> int:
    """Cents from a price as users type it."""
    return int(round(float(text) * 100))
'''

CART = '''\
from .utils import parse_money


def total(lines):
    cents = 0
    for price in lines:
        cents += 
    return cents
'''


@pytest.mark.timeout(60)
async def test_the_first_request_after_didopen_carries_a_signature_from_a_workspace_module(fake, tmp_path):
    """No time box at all: jedi has resolved nothing yet, the signature is read from the sibling module's text."""
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text(UTILS)
    cart = pkg / "cart.py"
    cart.write_text(CART)
    client = await start_client(fake, root=tmp_path, env={"HAPA_CONTEXT_FACTS_TIME_BUDGET_MS": "0"})
    try:
        fake.queue("parse_money(price)\n")
        open_doc(client, cart.as_uri(), CART)
        result = await client.text_document_inline_completion_async(inline_params(cart.as_uri(), 6, 17, invoked=True))
        assert result is not None and result.items[0].insert_text == "parse_money(price)"
        prompt = fake.requests[-1].json["prompt"]
        assert "<|file_sep|>shop/utils.py\ndef parse_money(text: str, *, currency: str = \"EUR\") -> int:\n" \
               '    """Cents from a price as users type it."""' in prompt, prompt
    finally:
        await stop_client(client)


@pytest.mark.timeout(60)
async def test_a_function_just_added_in_another_file_is_in_the_next_prompt(fake, tmp_path):
    """Recently edited code: the user adds a function to utils.py, then types in cart.py."""
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    utils = pkg / "utils.py"
    utils.write_text(UTILS)
    cart = pkg / "cart.py"
    cart.write_text(CART)
    # No neighbour snippets: the open utils.py must reach the prompt as the edit, not as a similar snippet.
    client = await start_client(fake, root=tmp_path, env={"HAPA_CONTEXT_FACTS_TIME_BUDGET_MS": "0",
                                                          "HAPA_CONTEXT_NEIGHBOUR_SNIPPETS": "0"})
    try:
        open_doc(client, utils.as_uri(), UTILS)
        open_doc(client, cart.as_uri(), CART)
        added = "\n\ndef with_vat(cents: int, rate: float = 0.2) -> int:\n    return round(cents * (1 + rate))\n"
        type_text(client, utils.as_uri(), 7, 0, added, version=2)
        fake.queue("with_vat(parse_money(price))\n")
        result = await client.text_document_inline_completion_async(inline_params(cart.as_uri(), 6, 17, invoked=True))
        assert result is not None and result.items[0].insert_text == "with_vat(parse_money(price))"
        prompt = fake.requests[-1].json["prompt"]
        assert "def with_vat(cents: int, rate: float = 0.2) -> int:\n    return round(cents * (1 + rate))" in prompt
        assert prompt.index("def with_vat") < prompt.index("<|file_sep|>shop/cart.py")
    finally:
        await stop_client(client)
