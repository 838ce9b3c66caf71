-- What ghost text and next edits share per buffer: the request in flight, LSP positions as byte columns, and
-- the autocommands that end a buffer's state.
local M = {}

--- Cancel the request `s` has in flight (its `client_id` / `request_id`), if any.
function M.cancel_request(s)
  if s.request_id then
    local client = vim.lsp.get_client_by_id(s.client_id)
    if client then
      pcall(function()
        client:cancel_request(s.request_id)
      end)
    end
    s.request_id = nil
  end
end

--- An LSP position (`encoding` units) as a 0-based row and byte column of the buffer; past the last line: its end.
function M.to_bytes(bufnr, pos, encoding)
  local count = vim.api.nvim_buf_line_count(bufnr)
  local row = pos.line
  if row >= count then
    -- The end of the document (e.g. an edit that deletes the last lines): the end of the last line.
    local last = vim.api.nvim_buf_get_lines(bufnr, count - 1, count, false)[1] or ''
    return count - 1, #last
  end
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  if encoding == 'utf-8' then
    return row, math.min(pos.character, #line)
  end
  local ok, col = pcall(vim.str_byteindex, line, encoding, pos.character, false)
  return row, ok and math.min(col, #line) or #line
end

--- Call `detach(bufnr)` when the LSP client of `s` (`s.client_id`) detaches from the buffer or the buffer is wiped.
function M.detach_on(group, bufnr, s, detach)
  vim.api.nvim_create_autocmd({ 'LspDetach' }, {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.data and args.data.client_id == s.client_id then
        detach(bufnr)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ 'BufWipeout' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      detach(bufnr)
    end,
  })
end

return M
