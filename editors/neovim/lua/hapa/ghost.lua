--- Ghost text for Neovim without vim.lsp.inline_completion: textDocument/inlineCompletion rendered with extmarks.
local M = {}
local buffer = require('hapa.buffer')
local keys = require('hapa.keys')

local METHOD = 'textDocument/inlineCompletion'
local TRIGGER_AUTOMATIC = 2

M.ns = vim.api.nvim_create_namespace('hapa_ghost')

-- Per buffer: client_id, opts, timer, request_id, items (positions in bytes), index, remaining text, dismissed_tick.
local state = {}

local function st(bufnr)
  return state[bufnr]
end

local function clear_marks(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

local cancel_request = buffer.cancel_request

--- Forget the shown suggestions of a buffer and remove the ghost text.
function M.clear(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local s = st(bufnr)
  if s then
    s.items, s.index, s.remaining = nil, nil, nil
  end
  clear_marks(bufnr)
end

--- Whether ghost text is showing in the buffer.
function M.visible(bufnr)
  local s = st(bufnr or vim.api.nvim_get_current_buf())
  return s ~= nil and s.remaining ~= nil and s.remaining ~= ''
end

--- The text the ghost currently shows (nil when none).
function M.current(bufnr)
  local s = st(bufnr or vim.api.nvim_get_current_buf())
  return s and s.remaining
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

-- LSP position -> (row, byte column) in the buffer, honouring the client's position encoding.
local to_bytes = buffer.to_bytes

local function item_text(item)
  local t = item.insertText
  if type(t) == 'table' then
    -- A snippet: shown and inserted as its plain text (placeholders keep their default text).
    t = (t.value or ''):gsub('%${%d+:([^}]*)}', '%1'):gsub('%$%d+', '')
  end
  return type(t) == 'string' and t or ''
end

-- The part of the current item not typed yet, given where the cursor is now (nil when it no longer fits).
local function remaining_for(bufnr, s)
  local item = s.items and s.items[s.index]
  if not item then
    return nil
  end
  local row, col = cursor()
  local srow, scol = item.srow, item.scol
  if row < srow or (row == srow and col < scol) then
    return nil
  end
  -- pcall: lines the suggestion started on may have been deleted since.
  local ok, parts = pcall(vim.api.nvim_buf_get_text, bufnr, srow, scol, row, col, {})
  if not ok then
    return nil
  end
  local typed = table.concat(parts, '\n')
  if item.text:sub(1, #typed) ~= typed then
    return nil
  end
  local rest = item.text:sub(#typed + 1)
  return rest ~= '' and rest or nil
end

-- The suggestion's description the server attached to its accept command (request id, model, length, ...).
local function item_info(item)
  local args = item.command and item.command.arguments
  return type(args) == 'table' and type(args[1]) == 'table' and args[1] or nil
end

-- Feedback for the acceptance rate: shown and partially accepted as notifications, accepted as the item's command.
local function report(item, event, accepted_length)
  local client = vim.lsp.get_client_by_id(item.client_id)
  if not client then
    return
  end
  if event == 'accepted' then
    if item.command and not item.accept_sent then
      item.accept_sent = true
      client:request('workspace/executeCommand', { command = item.command.command, arguments = item.command.arguments },
        function() end)
    end
    return
  end
  local info = item_info(item)
  if not info then
    return
  end
  local params = vim.deepcopy(info)
  if event == 'shown' then
    if item.shown_sent then
      return
    end
    item.shown_sent = true
    client:notify('hapa/didShowCompletion', params)
  else
    params.accepted_length = accepted_length
    client:notify('hapa/didPartiallyAcceptCompletion', params)
  end
end

local function render(bufnr, s)
  clear_marks(bufnr)
  local text = s.remaining
  if not text or text == '' then
    return
  end
  local row, col = cursor()
  local lines = vim.split(text, '\n', { plain = true })
  local hl = 'HapaGhostText'
  local opts = { hl_mode = 'combine', right_gravity = false }
  if lines[1] ~= '' then
    opts.virt_text = { { lines[1], hl } }
    opts.virt_text_pos = 'inline'
  end
  if #lines > 1 then
    local virt_lines = {}
    for i = 2, #lines do
      virt_lines[#virt_lines + 1] = { { lines[i], hl } }
    end
    opts.virt_lines = virt_lines
  end
  pcall(vim.api.nvim_buf_set_extmark, bufnr, M.ns, row, col, opts)
  report(s.items[s.index], 'shown')
end

-- Show the current item if it still fits what is typed; returns whether something is shown.
local function refresh(bufnr, s)
  s.remaining = remaining_for(bufnr, s)
  if not s.remaining then
    s.items, s.index = nil, nil
    clear_marks(bufnr)
    return false
  end
  render(bufnr, s)
  return true
end

local function request(bufnr)
  local s = st(bufnr)
  if not s or vim.api.nvim_get_current_buf() ~= bufnr or not vim.api.nvim_get_mode().mode:match('^i') then
    return
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  if not client then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local row, col = cursor()
  local key = ('%d:%d:%d'):format(tick, row, col)
  if s.request_id and s.request_key == key then
    return -- the same text and position are already being asked for (TextChangedI and CursorMovedI both fire)
  end
  cancel_request(s)
  local encoding = client.offset_encoding or 'utf-16'
  local params = vim.lsp.util.make_position_params(0, encoding)
  params.context = { triggerKind = TRIGGER_AUTOMATIC }
  local ok, id
  ok, id = client:request(METHOD, params, function(err, result)
    if s.request_id ~= id then
      return -- superseded by a newer request
    end
    s.request_id = nil
    if err or not result then
      return
    end
    -- Stale if the user typed or moved since the request was made; a newer request is on its way.
    local r, c = cursor()
    if vim.api.nvim_get_current_buf() ~= bufnr or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick
        or r ~= row or c ~= col or not vim.api.nvim_get_mode().mode:match('^i') then
      return
    end
    local raw = result.items or result
    local items = {}
    for _, it in ipairs(raw) do
      local text = item_text(it)
      if text ~= '' then
        local srow, scol, erow, ecol = row, col, row, col
        if it.range then
          srow, scol = to_bytes(bufnr, it.range.start, encoding)
          erow, ecol = to_bytes(bufnr, it.range['end'], encoding)
        end
        items[#items + 1] = { text = text, srow = srow, scol = scol, erow = erow, ecol = ecol,
          command = it.command, client_id = client.id }
      end
    end
    if #items == 0 then
      return
    end
    s.items, s.index = items, 1
    refresh(bufnr, s)
  end, bufnr)
  s.request_id = ok and id or nil
  s.request_key = key
end

local function schedule_request(bufnr)
  local s = st(bufnr)
  if not s then
    return
  end
  s.timer:stop()
  s.timer:start(s.opts.debounce_ms or 0, 0, vim.schedule_wrap(function()
    if vim.api.nvim_buf_is_valid(bufnr) then
      request(bufnr)
    end
  end))
end

local function on_change(bufnr)
  local s = st(bufnr)
  if not s then
    return
  end
  -- Type-through: what was typed matches the suggestion, so keep showing the rest without asking again.
  if s.items and refresh(bufnr, s) then
    return
  end
  if s.dismissed_tick == vim.api.nvim_buf_get_changedtick(bufnr) then
    return -- dismissed, and nothing typed since
  end
  schedule_request(bufnr)
end

-- The next piece of `text` for a partial accept.
local function piece(text, kind)
  if kind == 'word' then
    return text:match('^%s*[%w_]+') or text:match('^%s*[^%w_%s]+') or text:match('^%s+') or text
  elseif kind == 'line' then
    local nl = text:find('\n', 1, true)
    if nl == 1 then
      local nl2 = text:find('\n', 2, true)
      return nl2 and text:sub(1, nl2 - 1) or text
    end
    return nl and text:sub(1, nl) or text
  end
  return text
end

--- Accept the shown suggestion: kind 'all' (default), 'word' or 'line'. Returns whether anything was inserted.
function M.accept(kind)
  local bufnr = vim.api.nvim_get_current_buf()
  local s = st(bufnr)
  if not s or not s.remaining or s.remaining == '' then
    return false
  end
  local item = s.items[s.index]
  local chunk = piece(s.remaining, kind or 'all')
  local row, col = cursor()
  local end_row, end_col = row, col
  if chunk == s.remaining and item.erow == row and item.ecol > col then
    -- The item replaces text after the cursor (its range ends there): replace it with the rest of the suggestion.
    end_col = item.ecol
  end
  local lines = vim.split(chunk, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row, col, end_row, end_col, lines)
  local new_row = row + #lines - 1
  local new_col = (#lines == 1) and (col + #lines[1]) or #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { new_row + 1, new_col })
  if chunk == s.remaining then
    report(item, 'accepted')
  else
    report(item, 'partial', #item.text - #s.remaining + #chunk)
  end
  if chunk == s.remaining then
    M.clear(bufnr)
    -- The whole suggestion is in: wait for the next keystroke before suggesting again.
    s.dismissed_tick = vim.api.nvim_buf_get_changedtick(bufnr)
  else
    refresh(bufnr, s)
  end
  return true
end

--- Show the next (1) or previous (-1) of the server's suggestions.
function M.cycle(step)
  local bufnr = vim.api.nvim_get_current_buf()
  local s = st(bufnr)
  if not s or not s.items or #s.items < 2 then
    return
  end
  s.index = (s.index - 1 + step) % #s.items + 1
  refresh(bufnr, s)
end

--- Hide the suggestion until something is typed.
function M.dismiss()
  local bufnr = vim.api.nvim_get_current_buf()
  local s = st(bufnr)
  if s then
    cancel_request(s)
    s.timer:stop()
    s.dismissed_tick = vim.api.nvim_buf_get_changedtick(bufnr)
  end
  M.clear(bufnr)
end

local function fallback_for(bufnr, lhs)
  return keys.fallback_for(bufnr, lhs, 'i')
end

local function map(bufnr, lhs, rhs, desc, always)
  if not lhs then
    return
  end
  local fallback = fallback_for(bufnr, lhs)
  vim.keymap.set('i', lhs, function()
    if always or M.visible(bufnr) then
      return '<Cmd>lua ' .. rhs .. '<CR>'
    end
    return fallback()
  end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = desc })
end

--- Start ghost text for a buffer attached to `client` (idempotent).
function M.attach(client, bufnr, opts)
  if state[bufnr] then
    state[bufnr].client_id = client.id
    return
  end
  local s = { client_id = client.id, opts = opts, timer = assert(vim.uv.new_timer()) }
  state[bufnr] = s
  local group = vim.api.nvim_create_augroup('hapa_ghost_' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_change(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      s.timer:stop()
      cancel_request(s)
      M.clear(bufnr)
    end,
  })
  buffer.detach_on(group, bufnr, s, function(b)
    M.detach(b)
  end)
  local keys = opts.keymaps or {}
  local g = "require('hapa.ghost')"
  map(bufnr, keys.accept, g .. ".accept('all')", 'hapa: accept suggestion')
  map(bufnr, keys.accept_word, g .. ".accept('word')", 'hapa: accept next word of the suggestion')
  map(bufnr, keys.accept_line, g .. ".accept('line')", 'hapa: accept next line of the suggestion')
  map(bufnr, keys.next, g .. '.cycle(1)', 'hapa: next suggestion')
  map(bufnr, keys.prev, g .. '.cycle(-1)', 'hapa: previous suggestion')
  map(bufnr, keys.dismiss, g .. '.dismiss()', 'hapa: dismiss suggestion')
end

--- Stop ghost text for a buffer.
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
  pcall(vim.api.nvim_del_augroup_by_name, 'hapa_ghost_' .. bufnr)
end

return M
