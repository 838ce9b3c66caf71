-- Keys hapa maps on a buffer: what the key did before, so a mapping that has nothing to do passes it on.
local M = {}

-- What `lhs` did in `mode` before hapa mapped it (e.g. a completion plugin's <Tab>), as an expr-mapping result.
function M.fallback_for(bufnr, lhs, mode)
  local prev = vim.api.nvim_buf_call(bufnr, function()
    return vim.fn.maparg(lhs, mode, false, true)
  end)
  if type(prev) ~= 'table' or vim.tbl_isempty(prev) or (prev.desc or ''):match('^hapa: ') then
    return function()
      return lhs
    end
  end
  return function()
    if prev.callback then
      local out = prev.callback()
      return prev.expr == 1 and (out or '') or ''
    end
    if prev.expr == 1 then
      local ok, out = pcall(vim.api.nvim_eval, prev.rhs)
      return ok and out or lhs
    end
    return prev.rhs or lhs
  end
end

return M
