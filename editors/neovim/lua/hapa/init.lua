--- hapa-lsp for Neovim >= 0.11: starts the server, ghost-text inline completions, next edit suggestions, status,
--- streamed generations.
local M = {}

local NAME = 'hapa'

local defaults = {
  -- How to start the server; a list, e.g. { 'hapa-lsp' } (found on PATH) or { '/path/to/venv/bin/hapa-lsp' }.
  cmd = { 'hapa-lsp' },
  -- Extra environment for the server process (e.g. { HAPA_BACKEND_API_KEY = os.getenv('MY_KEY') }).
  cmd_env = nil,
  -- Filetypes to attach to; nil means every filetype (hapa completes any language).
  filetypes = nil,
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'setup.cfg', 'package.json' },
  -- The server's settings tree (section `hapa`, camelCase), e.g. { backend = { endpoint = 'http://127.0.0.1:11434' } }.
  settings = {},
  inline = {
    enabled = true,
    -- 'auto': Neovim's own vim.lsp.inline_completion when the running Neovim has it (0.12+), else hapa's ghost text.
    -- false: always hapa's ghost text.
    native = 'auto',
    -- Wait after the last keystroke before asking the server: just enough to merge the events of one keystroke;
    -- the server's adaptive debounce holds requests before any model call (superseding them costs nothing).
    debounce_ms = 25,
    -- Insert-mode keys; set one to false to leave that key alone.
    keymaps = {
      accept = '<Tab>',
      accept_word = '<M-Right>',
      accept_line = '<M-C-Right>',
      next = '<M-]>',
      prev = '<M-[>',
      dismiss = '<C-]>',
    },
  },
  -- Next edit suggestions (textDocument/copilotInlineEdit), when the server offers them: the edit the user will make
  -- next, near the cursor or a jump to the next place that needs the same change.
  next_edit = {
    enabled = true,
    -- Ask after a pause in typing (normal or insert mode); false: only on :HapaNextEdit.
    auto_trigger = true,
    -- The pause: wait this long after the last change before asking.
    debounce_ms = 300,
    -- Show 'next edit: line N' at the cursor when the edit is away from it.
    jump_hint = true,
    -- Accepting an edit away from the cursor first moves the cursor to it; false: apply it at once.
    jump = true,
    -- Normal-mode keys, mapped in the buffer; they do what they did before while no next edit is shown. false leaves
    -- a key alone. (Insert-mode <Tab> stays with ghost text.)
    keymaps = {
      accept = '<Tab>',
      dismiss = '<Esc>',
    },
  },
  status = {
    -- vim.notify once when the server reports an error or warning (again only after it recovered).
    notify = true,
  },
  -- Where streamed generations (:Hapa generate) are shown: 'split' (a scratch buffer) or 'notify'.
  generation_view = 'split',
}

M.config = vim.deepcopy(defaults)

-- Last hapa/status payload, and the codes already announced with vim.notify (cleared when the state is ok again).
M._status = { state = 'starting', message = 'hapa-lsp is starting' }
local notified = {}
local last_notified_message = nil

--- Merge user options over the defaults; lists (cmd, filetypes, root_markers) are replaced, not merged.
local function merge(opts)
  local cfg = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  for _, key in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do
    if opts and opts[key] ~= nil then
      cfg[key] = opts[key]
    end
  end
  if opts and opts.settings ~= nil then
    cfg.settings = opts.settings
  end
  return cfg
end

local function level_of(state)
  if state == 'error' then
    return vim.log.levels.ERROR
  end
  return vim.log.levels.WARN
end

--- The hapa client attached to a buffer (current buffer when nil), if any.
function M.client(bufnr)
  local clients = vim.lsp.get_clients({ name = NAME, bufnr = bufnr })
  if #clients == 0 and bufnr == nil then
    clients = vim.lsp.get_clients({ name = NAME })
  end
  return clients[1]
end

--- Handler of the server's `hapa/status` notification: remember it, tell the user once per error code.
function M._on_status(_, params)
  if type(params) ~= 'table' then
    return
  end
  M._status = {
    state = params.state or 'ok',
    message = params.message or '',
    code = params.code,
    incident_id = params.incident_id,
  }
  local st = M._status
  if st.state == 'ok' then
    notified = {}
  elseif (st.state == 'error' or st.state == 'warning') and M.config.status.notify then
    local key = st.code or st.message
    if not notified[key] then
      notified[key] = true
      last_notified_message = st.message
      local tail = (st.incident_id and not st.message:find(st.incident_id, 1, true))
        and (' (' .. st.incident_id .. ')') or ''
      vim.schedule(function()
        vim.notify('hapa-lsp: ' .. st.message .. tail, level_of(st.state), { title = 'hapa' })
      end)
    end
  end
  vim.schedule(function()
    pcall(vim.api.nvim_exec_autocmds, 'User', { pattern = 'HapaStatus', modeline = false, data = st })
    vim.cmd('redrawstatus')
  end)
end

--- window/showMessage through vim.notify, without repeating what hapa/status just announced.
function M._on_show_message(_, params, ctx)
  if type(params) ~= 'table' then
    return vim.NIL
  end
  local msg = params.message or ''
  if last_notified_message and msg == 'hapa-lsp: ' .. last_notified_message then
    return vim.NIL
  end
  local levels = { vim.log.levels.ERROR, vim.log.levels.WARN, vim.log.levels.INFO, vim.log.levels.DEBUG }
  vim.schedule(function()
    vim.notify(msg, levels[params.type] or vim.log.levels.INFO, { title = 'hapa' })
  end)
  return vim.NIL
end

--- Statusline component: '' without a server, else e.g. 'hapa:ok', 'hapa:busy', 'hapa:error E5001'.
function M.status()
  if not M.client() then
    return ''
  end
  local st = M._status
  local s = 'hapa:' .. (st.state or 'ok')
  if st.code and st.state ~= 'ok' then
    s = s .. ' ' .. st.code
  end
  return s
end

-- ---------------------------------------------------------------------------------------------- generations

-- Streamed generations: request_id -> scratch buffer; the buffer of the generation waiting for its first chunk.
local gen_bufs = {}
local pending_buf = nil
M._last_generation = nil

local function scratch(title, filetype)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'wipe'
  vim.bo[buf].swapfile = false
  if filetype and filetype ~= '' then
    vim.bo[buf].filetype = filetype
  end
  if title then
    pcall(vim.api.nvim_buf_set_name, buf, title)
  end
  local cur = vim.api.nvim_get_current_win()
  vim.cmd('botright 12split')
  vim.api.nvim_win_set_buf(0, buf)
  vim.api.nvim_set_current_win(cur)
  return buf
end

local function set_lines(buf, text)
  if buf and vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(text, '\n', { plain = true }))
  end
end

--- Handler of `hapa/streamChunk` ({request_id, text}: the text generated so far): shown live.
function M._on_stream_chunk(_, params)
  if type(params) ~= 'table' or type(params.text) ~= 'string' then
    return
  end
  local id = params.request_id or '?'
  vim.schedule(function()
    if M.config.generation_view == 'notify' then
      vim.notify(params.text, vim.log.levels.INFO, { title = 'hapa ' .. id, id = 'hapa-' .. id, replace = true })
      return
    end
    local buf = gen_bufs[id]
    if not buf then
      buf = pending_buf or scratch('hapa://generation/' .. id)
      pcall(vim.api.nvim_buf_set_name, buf, 'hapa://generation/' .. id)
      pending_buf = nil
      gen_bufs[id] = buf
    end
    set_lines(buf, params.text)
  end)
end

--- workspace/executeCommand `name` with one JSON object argument; `cb(err, result)` runs on the main loop.
function M.execute(name, arg, cb, bufnr)
  local client = M.client(bufnr)
  if not client then
    vim.notify('hapa-lsp is not running in this buffer', vim.log.levels.WARN)
    return
  end
  -- An empty Lua table would be sent as a JSON array; commands take one JSON object.
  if arg == nil or (type(arg) == 'table' and next(arg) == nil) then
    arg = vim.empty_dict()
  end
  client:request('workspace/executeCommand', { command = name, arguments = { arg } },
    function(err, result)
      if cb then
        cb(err, result)
      elseif err then
        vim.notify('hapa-lsp: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      end
    end, bufnr)
end

local function show(title, value, filetype)
  local buf = scratch(title, filetype or 'json')
  local text = type(value) == 'string' and value or vim.inspect(value)
  set_lines(buf, text)
  return buf
end

--- Generate code for `question` at the cursor (hapa.generateCode), streaming into a scratch buffer.
function M.generate(question)
  if not question or question == '' then
    vim.ui.input({ prompt = 'hapa: generate code for: ' }, function(q)
      if q and q ~= '' then
        M.generate(q)
      end
    end)
    return
  end
  local bufnr = vim.api.nvim_get_current_buf()
  local client = M.client(bufnr)
  if not client then
    vim.notify('hapa-lsp is not running in this buffer', vim.log.levels.WARN)
    return
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  if M.config.generation_view ~= 'notify' then
    -- Named when its request id is known (renaming a named buffer would leave its old name behind).
    pending_buf = scratch(nil, vim.bo[bufnr].filetype)
    set_lines(pending_buf, '# generating: ' .. question)
  end
  local view = pending_buf
  M.execute('hapa.generateCode', {
    user_question = question,
    uri = params.textDocument.uri,
    position = params.position,
    language = vim.bo[bufnr].filetype ~= '' and vim.bo[bufnr].filetype or nil,
    stream = true,
  }, function(err, result)
    if pending_buf == view then
      pending_buf = nil
    end
    if err then
      local data = type(err.data) == 'table' and err.data or {}
      vim.notify('hapa-lsp: ' .. (err.message or 'generation failed')
        .. (data.incident_id and (' (' .. data.incident_id .. ')') or ''), vim.log.levels.ERROR)
      return
    end
    M._last_generation = result
    if type(result) == 'table' and view and vim.api.nvim_buf_is_valid(view) then
      if vim.api.nvim_buf_get_name(view) == '' then
        pcall(vim.api.nvim_buf_set_name, view, 'hapa://generation/' .. (result.request_id or result.history_id or 'result'))
      end
      local text = result.generated_code or ''
      if result.explanation and result.explanation ~= '' then
        text = text .. '\n\n' .. table.concat(vim.tbl_map(function(l)
          return '# ' .. l
        end, vim.split(result.explanation, '\n', { plain = true })), '\n')
      end
      set_lines(view, text)
    end
  end, bufnr)
end

local function cmd_history()
  M.execute('hapa.history.list', {}, function(err, result)
    if err then
      return vim.notify('hapa-lsp: ' .. (err.message or 'history failed'), vim.log.levels.ERROR)
    end
    local items = type(result) == 'table' and result.items or {}
    if #items == 0 then
      return vim.notify('hapa: no generations yet', vim.log.levels.INFO)
    end
    local lines = {}
    for _, h in ipairs(items) do
      local when = type(h.created_at) == 'number' and os.date('%Y-%m-%d %H:%M', math.floor(h.created_at)) or h.created_at
      lines[#lines + 1] = ('#%s  %s  %s  %s'):format(h.history_id or '?', when or '', h.status or '',
        (h.question or h.kind or ''):gsub('\n', ' '))
      for _, l in ipairs(vim.split(h.generated_code or '', '\n', { plain = true })) do
        lines[#lines + 1] = '    ' .. l
      end
    end
    show('hapa://history', table.concat(lines, '\n'), 'markdown')
  end)
end

local function cmd_feedback(args)
  local rating = tonumber(args[1])
  if not rating then
    return vim.notify('usage: :Hapa feedback {1-5} [comment]', vim.log.levels.WARN)
  end
  local last = M._last_generation or {}
  M.execute('hapa.feedback', {
    rating = rating,
    comment = table.concat(vim.list_slice(args, 2), ' '),
    history_id = last.history_id,
    request_id = last.history_id == nil and last.request_id or nil,
  }, function(err)
    if err then
      return vim.notify('hapa-lsp: ' .. (err.message or 'feedback failed'), vim.log.levels.ERROR)
    end
    vim.notify('hapa: thanks for the feedback', vim.log.levels.INFO)
  end)
end

local function cmd_cache(args)
  if args[1] ~= 'clear' then
    return vim.notify('usage: :Hapa cache clear [all|completions|code_generation|user_profiles]', vim.log.levels.WARN)
  end
  local cache_type = args[2] or 'all'
  M.execute('hapa.cache.clear', { cache_type = cache_type, confirm = true }, function(err, result)
    if err then
      return vim.notify('hapa-lsp: ' .. (err.message or 'cache clear failed'), vim.log.levels.ERROR)
    end
    vim.notify('hapa: cache cleared ' .. vim.inspect(result, { newline = ' ', indent = '' }), vim.log.levels.INFO)
  end)
end

--- The dashboard URL: from the hapa.health result when it names one, else from the sidecar settings.
local function dashboard_url(health)
  if type(health) == 'table' then
    if type(health.dashboard_url) == 'string' then
      return health.dashboard_url
    end
    local sc = health.sidecar
    if type(sc) == 'table' then
      sc = sc.url
    end
    if type(sc) == 'string' and sc ~= '' then
      return (sc:gsub('/$', '')) .. '/dashboard'
    end
  end
  local sc = M.config.settings.sidecar
  if type(sc) == 'table' and sc.port then
    return ('http://%s:%s/dashboard'):format(sc.host or '127.0.0.1', sc.port)
  end
end

local function cmd_dashboard()
  M.execute('hapa.health', {}, function(err, result)
    local url = not err and dashboard_url(result) or dashboard_url(nil)
    if not url then
      return vim.notify('hapa: the server did not name a dashboard URL (is the sidecar on?)', vim.log.levels.WARN)
    end
    vim.ui.open(url)
  end)
end

local function cmd_stats()
  M.execute('hapa.stats', {}, function(err, result)
    if err then
      return vim.notify('hapa-lsp: ' .. (err.message or 'stats failed'), vim.log.levels.ERROR)
    end
    show('hapa://stats', result, 'lua')
  end)
end

local subcommands = {
  generate = function(args)
    M.generate(table.concat(args, ' '))
  end,
  history = cmd_history,
  feedback = cmd_feedback,
  cache = cmd_cache,
  dashboard = cmd_dashboard,
  stats = cmd_stats,
  status = function()
    local st = M._status
    vim.notify(('hapa: %s %s%s'):format(st.state, st.code and (st.code .. ' ') or '', st.message), vim.log.levels.INFO)
  end,
}

local function user_command(opts)
  local args = vim.split(vim.trim(opts.args), '%s+', { trimempty = true })
  local sub = table.remove(args, 1) or 'status'
  local fn = subcommands[sub]
  if not fn then
    return vim.notify('hapa: unknown subcommand ' .. sub, vim.log.levels.WARN)
  end
  fn(args)
end

-- ---------------------------------------------------------------------------------------------- next edits

--- :HapaNextEdit (ask now), :HapaNextEdit accept, :HapaNextEdit dismiss.
local function next_edit_command(opts)
  local ne = require('hapa.next_edit')
  local sub = vim.trim(opts.args)
  if not ne.attached(0) then
    local client = M.client(0)
    if not client then
      return vim.notify('hapa-lsp is not running in this buffer', vim.log.levels.WARN)
    end
    return vim.notify(M.config.next_edit.enabled and 'hapa-lsp does not offer next edits (an older server?)'
      or 'hapa: next edits are off (setup{ next_edit = { enabled = true } })', vim.log.levels.WARN)
  end
  if sub == '' then
    ne.request(vim.api.nvim_get_current_buf())
  elseif sub == 'accept' then
    ne.accept()
  elseif sub == 'dismiss' then
    ne.dismiss()
  else
    vim.notify('usage: :HapaNextEdit [accept|dismiss]', vim.log.levels.WARN)
  end
end

-- ---------------------------------------------------------------------------------------------- setup

local function has_native_inline()
  return vim.lsp.inline_completion ~= nil and type(vim.lsp.inline_completion.enable) == 'function'
end

--- Whether buffers get Neovim's own inline completion (true) or hapa's ghost text (false).
function M.uses_native_inline()
  local native = M.config.inline.native
  return native ~= false and has_native_inline()
end

local function map_native(bufnr, keys)
  local ic = vim.lsp.inline_completion
  local function set(lhs, fn, desc)
    if lhs then
      vim.keymap.set('i', lhs, fn, { buffer = bufnr, expr = true, replace_keycodes = true, desc = desc })
    end
  end
  set(keys.accept, function()
    if not ic.get({ bufnr = bufnr }) then
      return keys.accept
    end
  end, 'hapa: accept suggestion')
  -- `select` in Neovim 0.12; its development builds called it `jump`.
  local select = ic.select or ic.jump
  set(keys.next, function()
    select({ bufnr = bufnr, count = 1 })
  end, 'hapa: next suggestion')
  set(keys.prev, function()
    select({ bufnr = bufnr, count = -1 })
  end, 'hapa: previous suggestion')
end

local function on_attach(client, bufnr)
  if M.config.next_edit.enabled then
    require('hapa.next_edit').attach(client, bufnr, M.config.next_edit)
  end
  if not M.config.inline.enabled then
    return
  end
  if M.uses_native_inline() then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    map_native(bufnr, M.config.inline.keymaps)
  else
    require('hapa.ghost').attach(client, bufnr, M.config.inline)
  end
end

--- Configure and enable the server: require('hapa').setup{ cmd = ..., settings = {...}, inline = {...} }.
function M.setup(opts)
  M.config = merge(opts)
  local cfg = M.config
  vim.api.nvim_set_hl(0, 'HapaGhostText', { link = 'Comment', default = true })
  vim.api.nvim_set_hl(0, 'HapaNextEditDelete', { link = 'DiffDelete', default = true })
  vim.api.nvim_set_hl(0, 'HapaNextEditInsert', { link = 'DiffAdd', default = true })
  vim.api.nvim_set_hl(0, 'HapaNextEditHint', { link = 'DiagnosticHint', default = true })
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  if not M.uses_native_inline() then
    -- Neovim 0.11 does not announce inline completion; hapa's ghost text consumes it.
    capabilities.textDocument.inlineCompletion = { dynamicRegistration = false }
  end
  -- An empty Lua table would be sent as a JSON array; the server wants an object.
  local settings = next(cfg.settings) == nil and vim.empty_dict() or cfg.settings
  vim.lsp.config(NAME, {
    cmd = cfg.cmd,
    cmd_env = cfg.cmd_env,
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    -- A didChange per keystroke (as VS Code sends): the server paces its own debounce by the typing rhythm, and
    -- Neovim's default 150 ms batching made it see 150 ms gaps and wait ~225 ms (benchmarks/editor_ghost_latency.py).
    flags = { debounce_text_changes = 0 },
    init_options = { hapa = settings },
    settings = { hapa = settings },
    capabilities = capabilities,
    handlers = {
      -- Looked up on each call, so M._on_* can be wrapped after setup.
      ['hapa/status'] = function(...)
        return M._on_status(...)
      end,
      ['hapa/streamChunk'] = function(...)
        return M._on_stream_chunk(...)
      end,
      ['window/showMessage'] = function(...)
        return M._on_show_message(...)
      end,
    },
    on_attach = on_attach,
  })
  vim.lsp.enable(NAME)
  pcall(vim.api.nvim_del_user_command, 'Hapa')
  vim.api.nvim_create_user_command('Hapa', user_command, {
    nargs = '*',
    desc = 'hapa-lsp: generate, history, feedback, cache clear, dashboard, stats, status',
    complete = function(arglead, line)
      local words = vim.split(line, '%s+', { trimempty = true })
      if #words <= 1 or (#words == 2 and arglead ~= '') then
        return vim.tbl_filter(function(k)
          return vim.startswith(k, arglead)
        end, vim.tbl_keys(subcommands))
      end
      if words[2] == 'cache' then
        return { 'clear', 'all', 'completions', 'code_generation', 'user_profiles' }
      end
      return {}
    end,
  })
  pcall(vim.api.nvim_del_user_command, 'HapaNextEdit')
  vim.api.nvim_create_user_command('HapaNextEdit', next_edit_command, {
    nargs = '?',
    desc = 'hapa-lsp: ask for the next edit now; accept or dismiss the shown one',
    complete = function(arglead)
      return vim.tbl_filter(function(k)
        return vim.startswith(k, arglead)
      end, { 'accept', 'dismiss' })
    end,
  })
end

return M
