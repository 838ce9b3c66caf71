"""A real Neovim 0.11 with editors/neovim typing into a Python file: ghost text, accept, code actions, outages."""

from __future__ import annotations


from tests.fakes.model_server import RequestRecord

HEADER = "def add(a, b):"


def _ghost_texts(ed) -> list[tuple[int, int, str, list[str]]]:
    """(row, col, first line, further lines) of every ghost-text mark."""
    out = []
    for m in ed.ghost():
        first = "".join(chunk[0] for chunk in m["virt_text"])
        rest = ["".join(chunk[0] for chunk in line) for line in m["virt_lines"]]
        out.append((m["row"], m["col"], first, rest))
    return out


def test_typing_shows_ghost_text_and_tab_inserts_it(start_editor, fake, tmp_path):
    fake.script(lambda req: "return a + b\n")
    # The plugin's default command: `hapa-lsp` from PATH, as the README tells users.
    ed = start_editor(cmd=None, settings={"backend": {"kind": "ollama", "completionModel": "qwen2.5-coder:0.5b-base"},
                                          "completion": {"maxLines": 8}})
    ed.open(tmp_path / "calc.py")
    ed.keys("i")
    ed.type(HEADER + "\n")
    assert ed.lines() == [HEADER, "    "]  # Neovim's own Python indent after the colon

    ghost = ed.wait_for(lambda: _ghost_texts(ed), what="ghost text")
    assert ghost == [(1, 4, "return a + b", [])]
    assert ed.lines() == [HEADER, "    "], "ghost text must not touch the buffer"
    # Neovim's didChange notifications are what the server built the prompt from, with setup{}'s settings.
    assert HEADER + "\n    " in fake.requests[-1].prompt
    assert fake.requests[-1].json["model"] == "qwen2.5-coder:0.5b-base"

    ed.keys("<Tab>")
    ed.wait_for(lambda: ed.lines() == [HEADER, "    return a + b"], what="the accepted suggestion in the buffer")
    assert ed.lua("return vim.api.nvim_win_get_cursor(0)") == [2, len("    return a + b")]
    assert ed.lua("return vim.api.nvim_get_mode().mode") == "i"
    assert _ghost_texts(ed) == []
    # The item's hapa.didAcceptCompletion command reached the server.
    ed.wait_for(lambda: ed.command("hapa.stats").get("accepted") == 1, what="the server to count the accept")
    # The plugin's settings reached the server as a valid `hapa` object (no configuration warnings).
    assert [n["msg"] for n in ed.notes()] == []


def test_multiline_ghost_partial_accept_and_dismiss(start_editor, fake, tmp_path):
    fake.script(lambda req: "total = a + b\n    return total\n")
    ed = start_editor()
    ed.open(tmp_path / "calc.py")
    ed.keys("i")
    ed.type(HEADER + "\n")
    ghost = ed.wait_for(lambda: _ghost_texts(ed), what="ghost text")
    assert ghost == [(1, 4, "total = a + b", ["    return total"])]

    ed.keys("<M-Right>")  # accept one word
    ed.wait_for(lambda: ed.lines() == [HEADER, "    total"], what="the first word accepted")
    ed.wait_for(lambda: _ghost_texts(ed) == [(1, 9, " = a + b", ["    return total"])],
                what="the rest still shown after a partial accept")

    ed.type(" =")  # typing what the ghost shows keeps it (type-through), without a new model call
    calls = len(fake.requests)
    ed.wait_for(lambda: _ghost_texts(ed) == [(1, 11, " a + b", ["    return total"])], what="type-through")

    ed.keys("<M-C-Right>")  # accept the rest of the line, including its newline
    ed.wait_for(lambda: ed.lines() == [HEADER, "    total = a + b", ""], what="the line accepted")
    ed.wait_for(lambda: _ghost_texts(ed) == [(2, 0, "    return total", [])], what="the last line as ghost")

    ed.keys("<C-]>")  # dismiss
    ed.wait_for(lambda: _ghost_texts(ed) == [], what="the ghost text to go away")
    assert ed.lines() == [HEADER, "    total = a + b", ""]
    assert len(fake.requests) == calls, "neither type-through nor partial accepts may call the model"


def test_generate_code_action_through_neovims_own_menu(start_editor, fake, tmp_path):
    def answer(req: RequestRecord) -> str:
        if req.messages is None:  # inline completion while the file is open: nothing to suggest
            return ""
        return ("```python\ndef dedupe(items):\n    seen = set()\n"
                "    return [x for x in items if not (x in seen or seen.add(x))]\n```")

    fake.script(answer)
    path = tmp_path / "listutil.py"
    path.write_text("# remove duplicates from a list, keep order\n")
    ed = start_editor()
    ed.open(path)
    # Neovim's own code action menu; vim.ui.select is where a user would pick, so the test picks there.
    ed.lua("""
        _G.hapa_test_menu = nil
        vim.ui.select = function(items, opts, on_choice)
          local titles = {}
          for _, it in ipairs(items) do titles[#titles + 1] = it.action.title end
          _G.hapa_test_menu = titles
          for i, it in ipairs(items) do
            if it.action.title:find('Generate') then return on_choice(it, i) end
          end
          on_choice(nil, nil)
        end
        vim.api.nvim_win_set_cursor(0, { 1, 5 })
        vim.lsp.buf.code_action()
    """)
    menu = ed.wait_for(lambda: ed.lua("return _G.hapa_test_menu"), what="the code action menu")
    assert any("Generate" in t for t in menu), menu
    ed.wait_for(lambda: "def dedupe(items):" in ed.lines(), timeout=10, what="the generated function in the buffer")
    # The comment stays; the function it describes goes right below it, exactly as generated.
    assert ed.lines() == ["# remove duplicates from a list, keep order",
                          "def dedupe(items):",
                          "    seen = set()",
                          "    return [x for x in items if not (x in seen or seen.add(x))]",
                          ""]


def test_model_outage_is_reported_once_and_typing_goes_on(start_editor, fake, tmp_path):
    fake.fault = "refuse"
    ed = start_editor()
    ed.lua("vim.keymap.set('i', '<Tab>', '  # tab')")  # the user's own <Tab>, e.g. from a completion plugin
    ed.open(tmp_path / "calc.py")
    ed.keys("i")
    ed.type(HEADER + "\n")
    try:
        ed.wait_for(lambda: "E5005" in ed.status(), what="the outage in the statusline")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statusline {ed.status()!r}, notes {ed.notes()!r}") from None
    status = ed.status()
    assert status in ("hapa:warning E5005", "hapa:error E5005")
    notes = ed.wait_for(lambda: [n for n in ed.notes() if "E5005" in n["msg"]], what="a notification")
    assert notes[0]["msg"].startswith("hapa-lsp: E5005") and "INC-" in notes[0]["msg"]

    ed.type("return a")  # the editor stays usable while the model is down
    assert ed.lines() == [HEADER, "    return a"]
    assert ed.lua("return vim.api.nvim_get_mode().mode") == "i"
    assert _ghost_texts(ed) == []
    assert len([n for n in ed.notes() if "E5005" in n["msg"]]) == 1, "told once, not on every keystroke"
    ed.keys("<Tab>")  # no suggestion shown: the key does what it did before hapa mapped it
    ed.wait_for(lambda: ed.lines() == [HEADER, "    return a  # tab"], what="the user's own <Tab>")


def test_hapa_generate_streams_into_a_scratch_buffer_and_inserts_at_the_cursor(start_editor, fake, tmp_path):
    code = ("def dedupe(items):\n    seen = set()\n"
            "    return [x for x in items if not (x in seen or seen.add(x))]")
    fake.script(lambda req: "" if req.messages is None else f"```python\n{code}\n```")
    fake.configure(token_delay=0.01)  # tokens arrive over ~0.4 s, so the editor sees the text grow
    path = tmp_path / "listutil.py"
    path.write_text("import os\n\n")
    ed = start_editor()
    ed.open(path)
    ed.lua("""
        _G.hapa_test_chunks = {}
        local hapa = require('hapa')
        local orig = hapa._on_stream_chunk
        hapa._on_stream_chunk = function(err, params, ctx)
          table.insert(_G.hapa_test_chunks, params.text)
          return orig(err, params, ctx)
        end
        vim.api.nvim_win_set_cursor(0, { 2, 0 })
    """)
    ed.nvim.command("Hapa generate remove duplicates from a list, keep order")
    ed.wait_for(lambda: "def dedupe(items):" in ed.lines(), timeout=10, what="the code inserted at the cursor")
    assert "\n".join(ed.lines()).startswith("import os\n" + code.split("\n")[0])
    chunks = ed.lua("return _G.hapa_test_chunks")
    # hapa/streamChunk carries the text so far: it grows chunk by chunk up to the whole answer.
    assert len(chunks) >= 2
    assert all(later.startswith(earlier) for earlier, later in zip(chunks, chunks[1:])), chunks
    assert code in chunks[-1]
    view = ed.wait_for(lambda: ed.lua("""
        for _, b in ipairs(vim.api.nvim_list_bufs()) do
          if vim.api.nvim_buf_get_name(b):match('^hapa://generation/') then
            return vim.api.nvim_buf_get_lines(b, 0, -1, false)
          end
        end
    """), what="the generation's scratch buffer")
    assert "def dedupe(items):" in view


def test_hapa_commands_clear_the_cache_show_stats_and_open_the_dashboard(start_editor, fake, tmp_path):
    ed = start_editor()
    ed.open(tmp_path / "calc.py")
    ed.lua("vim.ui.open = function(url) _G.hapa_test_opened = url end")
    ed.nvim.command("Hapa cache clear completions")
    note = ed.wait_for(lambda: [n["msg"] for n in ed.notes() if "cache cleared" in n["msg"]], what="the cache clear")
    assert 'cache_type = "completions"' in note[0]
    ed.nvim.command("Hapa stats")
    stats = ed.wait_for(lambda: ed.lua("""
        for _, b in ipairs(vim.api.nvim_list_bufs()) do
          if vim.api.nvim_buf_get_name(b):match('hapa://stats$') then
            return table.concat(vim.api.nvim_buf_get_lines(b, 0, -1, false), '\\n')
          end
        end"""), what="the stats buffer")
    assert "requests = 0" in stats and "upstream_calls = 0" in stats  # nothing typed yet
    ed.wait_for(lambda: ed.command("hapa.health").get("sidecar"), what="the sidecar to listen")
    ed.nvim.command("Hapa dashboard")
    url = ed.wait_for(lambda: ed.lua("return _G.hapa_test_opened"), what="the dashboard to open")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard")
    health = ed.command("hapa.health")
    assert url == health["sidecar"].rstrip("/") + "/dashboard"
    assert [n["msg"] for n in ed.notes() if "E4" in n["msg"] or "E5" in n["msg"]] == []
    ed.nvim.command("checkhealth hapa")
    report = "\n".join(ed.lines())
    assert "OK server command:" in report and "OK client" in report and "OK status: ok" in report, report
    assert "ERROR" not in report and "WARNING" not in report, report


def test_omni_completion_menu_lists_jedis_items_and_the_ai_item(start_editor, fake, tmp_path):
    """<C-x><C-o> in a real Neovim, once, in a file just opened with a cold jedi cache: the first menu already has
    jedi's names (from the server's jedi worker) and the AI item. A folder with a space in its name."""
    fake.script(lambda req: "th.join('a', 'b')")
    ed = start_editor()
    folder = tmp_path / "my project"
    folder.mkdir()
    ed.open(folder / "paths.py")
    ed.keys("i")
    ed.type("import os\nos.pa")
    ed.keys("<C-x><C-o>")

    def menu() -> list[dict]:
        return ed.lua("return vim.fn.complete_info({'items'}).items") or []

    items = ed.wait_for(menu, timeout=20, what="the completion menu")
    words = [i["word"] for i in items]
    labels = [i["abbr"] for i in items]
    assert "path" in words and "pardir" in words, words
    assert "path.join('a', 'b')" in labels, labels  # the AI item, labelled with the whole suggestion
    ed.keys("<C-e><Esc>")
