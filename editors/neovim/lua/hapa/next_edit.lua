--- Next edit suggestions: textDocument/copilotInlineEdit rendered with extmarks; accept, jump and dismiss.
---
--- After a pause in typing (or on :HapaNextEdit) the server is asked for the edit the user will make next. The answer
--- may be near the cursor or a "jump" to another place in the document. The text it replaces is highlighted as
--- deleted, the new text shown as virtual text, and a far edit gets a hint at the cursor. Accepting a far edit first
--- moves the cursor there; accepting again applies it and asks for the next one.
local M = {}
local buffer = require('hapa.buffer')
local keys = require('hapa.keys')

local METHOD = 'textDocument/copilotInlineEdit'
local SHOWN = 'textDocument/didShowInlineEdit'

M.ns = vim.api.nvim_create_namespace('hapa_next_edit')

-- Per buffer: client_id, opts, timer, request_id, request_tick (changedtick the last request was made at), edit (the
-- one shown: item as answered, byte positions, tick it was answered for, hint_row).
local state = {}

-- nil or 0: the current buffer.
local function resolve(bufnr)
  if bufnr == nil or bufnr == 0 then
    return vim.api.nvim_get_current_buf()
  end
  return bufnr
end

local function valid(bufnr)
  return bufnr and vim.api.nvim_buf_is_valid(bufnr)
end

local function tick_of(bufnr)
  return vim.api.nvim_buf_get_changedtick(bufnr)
end

local function clear_marks(bufnr)
  if valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

local cancel_request = buffer.cancel_request

--- Whether the server answers textDocument/copilotInlineEdit (it says so under `experimental`).
function M.supported(client)
  local caps = client and client.server_capabilities
  local exp = type(caps) == 'table' and caps.experimental or nil
  local ne = type(exp) == 'table' and exp.copilotInlineEdit or nil
  return ne ~= nil and ne ~= vim.NIL and ne ~= false
end

--- The shown next edit of a buffer (current buffer when nil): the item as the server answered it, or nil.
function M.current(bufnr)
  local s = state[resolve(bufnr)]
  return s and s.edit and s.edit.item or nil
end

--- Whether a next edit is shown in the buffer (and still fits its text).
function M.visible(bufnr)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  return s ~= nil and s.edit ~= nil and valid(bufnr) and s.edit.tick == tick_of(bufnr)
end

-- LSP position -> (row, byte column), honouring the client's position encoding; clamped to the buffer.
local to_bytes = buffer.to_bytes

local function cursor_row()
  return vim.api.nvim_win_get_cursor(0)[1] - 1
end

-- Whether the edit is away from the cursor: not on the cursor line or the lines right above and below it.
local function is_far(e, row)
  return row < e.srow - 1 or row > e.erow + 1
end

local function line_at(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
end

local function virt(lines, hl)
  local out = {}
  for _, l in ipairs(lines) do
    out[#out + 1] = { { l, hl } }
  end
  return out
end

local function set_mark(bufnr, row, col, opts)
  pcall(vim.api.nvim_buf_set_extmark, bufnr, M.ns, row, col, opts)
end

local function render(bufnr, s)
  clear_marks(bufnr)
  local e = s.edit
  if not e then
    return
  end
  local text = e.item.text or ''
  local lines = vim.split(text, '\n', { plain = true })
  local del, add = 'HapaNextEditDelete', 'HapaNextEditInsert'
  local empty_range = e.srow == e.erow and e.scol == e.ecol
  if not empty_range then
    set_mark(bufnr, e.srow, e.scol, { end_row = e.erow, end_col = e.ecol, hl_group = del, hl_mode = 'combine',
      priority = 200 })
  end
  if e.srow == e.erow and #lines == 1 then
    -- One line: the new text right after the span it replaces.
    if text ~= '' then
      set_mark(bufnr, e.erow, e.ecol, { virt_text = { { text, add } }, virt_text_pos = 'inline', hl_mode = 'combine',
        priority = 200 })
    end
  elseif e.scol == 0 and e.ecol == 0 and (text == '' or text:sub(-1) == '\n') then
    -- Whole lines replaced (or inserted, or deleted): the new lines, without the unchanged line after them.
    local new = vim.list_slice(lines, 1, #lines - 1)
    if #new > 0 then
      if e.erow > e.srow then
        set_mark(bufnr, e.erow - 1, 0, { virt_lines = virt(new, add) })
      else
        set_mark(bufnr, e.srow, 0, { virt_lines = virt(new, add), virt_lines_above = true })
      end
    end
  else
    -- Within or across lines: the edited lines as they will read, below them.
    local new = vim.deepcopy(lines)
    new[1] = line_at(bufnr, e.srow):sub(1, e.scol) .. new[1]
    new[#new] = new[#new] .. line_at(bufnr, e.erow):sub(e.ecol + 1)
    set_mark(bufnr, e.erow, 0, { virt_lines = virt(new, add) })
  end
  e.hint_row = nil
  if s.opts.jump_hint ~= false and vim.api.nvim_get_current_buf() == bufnr then
    local row = cursor_row()
    if is_far(e, row) then
      e.hint_row = row
      set_mark(bufnr, row, 0, { virt_text = { { 'next edit: line ' .. (e.srow + 1), 'HapaNextEditHint' } },
        virt_text_pos = 'eol', hl_mode = 'combine' })
    end
  end
end

-- Forget the shown edit and remove its marks.
local function clear(bufnr, s)
  if s then
    s.edit = nil
  end
  clear_marks(bufnr)
end

local function show(bufnr, s, client, item, tick)
  local encoding = client.offset_encoding or 'utf-16'
  local srow, scol = to_bytes(bufnr, item.range.start, encoding)
  local erow, ecol = to_bytes(bufnr, item.range['end'], encoding)
  if erow < srow or (erow == srow and ecol < scol) then
    srow, scol, erow, ecol = erow, ecol, srow, scol
  end
  s.edit = { item = item, srow = srow, scol = scol, erow = erow, ecol = ecol, tick = tick, client_id = client.id }
  render(bufnr, s)
  client:notify(SHOWN, { item = item })
  pcall(vim.api.nvim_exec_autocmds, 'User', { pattern = 'HapaNextEdit', modeline = false, data = item })
end

-- The answer's first edit that is for this buffer at the version asked about (nil when none).
local function pick(bufnr, result, version)
  local edits = type(result) == 'table' and result.edits or nil
  if type(edits) ~= 'table' then
    return nil
  end
  local uri = vim.uri_from_bufnr(bufnr)
  for _, item in ipairs(edits) do
    local doc = type(item) == 'table' and item.textDocument or nil
    local same_doc = type(doc) ~= 'table' or type(doc.uri) ~= 'string' or doc.uri == uri
      or vim.uri_to_fname(doc.uri) == vim.api.nvim_buf_get_name(bufnr)
    local same_version = type(doc) ~= 'table' or doc.version == nil or doc.version == vim.NIL or doc.version == version
    if same_doc and same_version and type(item.range) == 'table' and type(item.text) == 'string' then
      return item
    end
  end
end

--- Ask the server for the next edit at the cursor of the current buffer now (a newer request cancels the older).
function M.request(bufnr)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  if not s or not valid(bufnr) or vim.api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  if not client or not M.supported(client) then
    return
  end
  cancel_request(s)
  s.timer:stop()
  local tick = tick_of(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding or 'utf-16')
  local version = vim.lsp.util.buf_versions[bufnr]
  if not version or version == 0 then
    version = tick
  end
  params.textDocument.version = version
  local ok, id
  ok, id = client:request(METHOD, params, function(err, result)
    if s.request_id ~= id then
      return -- cancelled or superseded by a newer request
    end
    s.request_id = nil
    if err or not valid(bufnr) or tick_of(bufnr) ~= tick then
      return -- the buffer changed since the request: the answer is about text that is gone
    end
    local item = pick(bufnr, result, version)
    if not item then
      return
    end
    show(bufnr, s, client, item, tick)
  end, bufnr)
  s.request_id = ok and id or nil
  s.request_tick = tick
end

local function schedule_request(bufnr, s)
  s.timer:stop()
  s.timer:start(s.opts.debounce_ms or 0, 0, vim.schedule_wrap(function()
    if valid(bufnr) and state[bufnr] == s and vim.api.nvim_get_current_buf() == bufnr then
      M.request(bufnr)
    end
  end))
end

local function on_change(bufnr)
  local s = state[bufnr]
  if not s then
    return
  end
  local tick = tick_of(bufnr)
  if s.edit and s.edit.tick ~= tick then
    clear(bufnr, s) -- any change dismisses what is shown
  end
  if s.request_tick == tick then
    return -- already asked about this text (e.g. right after an accept)
  end
  if s.request_id then
    cancel_request(s) -- its answer would be stale
  end
  if s.opts.auto_trigger ~= false then
    schedule_request(bufnr, s)
  end
end

local function on_cursor(bufnr)
  local s = state[bufnr]
  if not s or not s.edit or s.opts.jump_hint == false then
    return
  end
  -- The jump hint follows the cursor, and goes away once the cursor is at the edit.
  local row = cursor_row()
  local want = is_far(s.edit, row) and row or nil
  if want ~= s.edit.hint_row then
    render(bufnr, s)
  end
end

-- The accept command reaches the server (it records the acceptance); `done` runs after its answer.
local function run_command(client, bufnr, command, done)
  if type(command) ~= 'table' or type(command.command) ~= 'string' then
    return done()
  end
  local provider = client.server_capabilities and client.server_capabilities.executeCommandProvider
  local listed = type(provider) == 'table' and vim.list_contains(provider.commands or {}, command.command)
  local client_side = (client.commands and client.commands[command.command]) or vim.lsp.commands[command.command]
  if client.exec_cmd and (listed or client_side) then
    client:exec_cmd(command, { bufnr = bufnr }, function()
      done()
    end)
    if client_side then
      done()
    end
    return
  end
  client:request('workspace/executeCommand', { command = command.command, arguments = command.arguments },
    function()
      done()
    end, bufnr)
end

--- Accept the shown next edit of the current buffer. A far edit (not on the cursor line +- 1) first moves the cursor
--- to it (on the jumplist); accepting again applies it, puts the cursor at the end of the new text, runs the
--- accept command and asks for the next edit. Returns whether anything happened.
function M.accept()
  local bufnr = vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  if not s or not s.edit then
    return false
  end
  local e = s.edit
  if e.tick ~= tick_of(bufnr) then
    clear(bufnr, s)
    return false
  end
  local client = vim.lsp.get_client_by_id(e.client_id)
  if not client then
    clear(bufnr, s)
    return false
  end
  if s.opts.jump ~= false and is_far(e, cursor_row()) then
    vim.cmd("normal! m'")
    vim.api.nvim_win_set_cursor(0, { e.srow + 1, e.scol })
    render(bufnr, s)
    return true
  end
  local item = e.item
  clear(bufnr, s)
  cancel_request(s)
  s.timer:stop()
  vim.lsp.util.apply_text_edits({ { range = item.range, newText = item.text } }, bufnr,
    client.offset_encoding or 'utf-16')
  local lines = vim.split(item.text, '\n', { plain = true })
  local row = e.srow + #lines - 1
  local col = (#lines == 1) and (e.scol + #lines[1]) or #lines[#lines]
  if not vim.api.nvim_get_mode().mode:match('^[iR]') and col > 0 and item.text ~= '' then
    -- Normal mode: on the last character of the new text (as after a put).
    local line = line_at(bufnr, row)
    col = math.min(col, #line) - 1
    if col > 0 then
      col = col + vim.str_utf_start(line, col + 1)
    end
  end
  pcall(vim.api.nvim_win_set_cursor, 0, { row + 1, math.max(col, 0) })
  local tick = tick_of(bufnr)
  s.request_tick = tick -- the change is ours: the next request follows the accept below, not the debounce
  run_command(client, bufnr, item.command, function()
    if state[bufnr] == s and valid(bufnr) and tick_of(bufnr) == tick and vim.api.nvim_get_current_buf() == bufnr then
      s.request_tick = nil
      M.request(bufnr)
    end
  end)
  return true
end

--- Hide the shown next edit (and drop the request on its way) until the buffer changes again.
function M.dismiss()
  local bufnr = vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  if not s then
    return false
  end
  local shown = s.edit ~= nil
  cancel_request(s)
  s.timer:stop()
  s.request_tick = tick_of(bufnr)
  clear(bufnr, s)
  return shown
end

local function fallback_for(bufnr, lhs)
  return keys.fallback_for(bufnr, lhs, 'n')
end

local function map(bufnr, lhs, fn, desc)
  if not lhs then
    return
  end
  local fallback = fallback_for(bufnr, lhs)
  vim.keymap.set('n', lhs, function()
    if M.visible(bufnr) then
      return '<Cmd>lua require("hapa.next_edit").' .. fn .. '()<CR>'
    end
    return fallback()
  end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = desc })
end

--- Start next edit suggestions for a buffer attached to `client` (only when the server offers them; idempotent).
function M.attach(client, bufnr, opts)
  if not M.supported(client) then
    return
  end
  if state[bufnr] then
    state[bufnr].client_id = client.id
    state[bufnr].opts = opts
    return
  end
  local s = { client_id = client.id, opts = opts, timer = assert(vim.uv.new_timer()) }
  state[bufnr] = s
  local group = vim.api.nvim_create_augroup('hapa_next_edit_' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'TextChanged', 'TextChangedI', 'TextChangedP' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_change(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ 'CursorMoved', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_cursor(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      s.timer:stop()
      cancel_request(s)
    end,
  })
  buffer.detach_on(group, bufnr, s, function(b)
    M.detach(b)
  end)
  local keys = opts.keymaps or {}
  map(bufnr, keys.accept, 'accept', 'hapa: accept (or jump to) the next edit')
  map(bufnr, keys.dismiss, 'dismiss', 'hapa: dismiss the next edit')
end

--- Stop next edit suggestions for a buffer.
function M.detach(bufnr)
  local s = state[bufnr]
  if not s then
    return
  end
  state[bufnr] = nil
  s.timer:stop()
  s.timer:close()
  cancel_request(s)
  clear_marks(bufnr)
  pcall(vim.api.nvim_del_augroup_by_name, 'hapa_next_edit_' .. bufnr)
end

--- Whether the buffer has next edit suggestions (the server offers them and they are on).
function M.attached(bufnr)
  return state[resolve(bufnr)] ~= nil
end

return M
