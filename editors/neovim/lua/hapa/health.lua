--- :checkhealth hapa — Neovim version, the server command, the running client and its last status.
local M = {}

function M.check()
  local health = vim.health
  local hapa = require('hapa')
  health.start('hapa')
  if vim.fn.has('nvim-0.11') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim >= 0.11 is required (vim.lsp.config / vim.lsp.enable)')
  end
  local cmd = hapa.config.cmd or {}
  local exe = type(cmd) == 'table' and cmd[1] or nil
  if exe and vim.fn.executable(exe) == 1 then
    health.ok(('server command: %s (%s)'):format(table.concat(cmd, ' '), vim.fn.exepath(exe)))
  else
    health.error(('server command not found: %s'):format(exe or '?'),
      { 'pip install hapa-lsp, or pass cmd = { "/path/to/hapa-lsp" } to setup()' })
  end
  if hapa.uses_native_inline() then
    health.ok('inline completion: Neovim\'s vim.lsp.inline_completion')
  else
    health.ok('inline completion: hapa ghost text (extmarks)')
  end
  local client = hapa.client()
  if not client then
    health.warn('hapa-lsp is not running (open a file, or check :Hapa status)')
    return
  end
  health.ok(('client %d running, root %s'):format(client.id, client.root_dir or '(single file)'))
  local st = hapa._status
  local line = ('status: %s%s %s'):format(st.state, st.code and (' ' .. st.code) or '', st.message or '')
  if st.state == 'error' then
    health.error(line, st.incident_id and { 'incident ' .. st.incident_id .. '; run hapa-lsp doctor' } or nil)
  elseif st.state == 'warning' then
    health.warn(line)
  else
    health.ok(line)
  end
end

return M
