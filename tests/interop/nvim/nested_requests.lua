-- A TakodEvent handler that asks takod something (rpcrequest) while the editor may be
-- blocked in another takod request: run by tests/interop/test_neovim.py.
--
--   TAKOD_NVIM_SOCKET  the daemon's socket path
--   TAKOD_NVIM_OUT     JSON results file, written once at the end
--   TAKOD_NVIM_ROUNDS  how many settings.set + keys.set rounds
--
-- Each round's requests make the daemon publish `status` and `auth` events while
-- the request is still running; the handler's own request must never see a reply
-- out of the order Neovim expects (Neovim 0.7 then closes the channel:
-- "returned a response with an unknown request id").

local out = { rounds = 0, handler_calls = 0, handler_errors = {}, errors = {} }

local function main()
  local ch = vim.fn.sockconnect('pipe', os.getenv('TAKOD_NVIM_SOCKET'), { rpc = true })
  local rounds = tonumber(os.getenv('TAKOD_NVIM_ROUNDS') or '20')
  vim.api.nvim_create_autocmd('User', {
    pattern = 'TakodEvent',
    callback = function()
      local ok, err = pcall(vim.rpcrequest, ch, 'status')
      out.handler_calls = out.handler_calls + 1
      if not ok then
        out.handler_errors[#out.handler_errors + 1] = tostring(err)
      end
    end,
  })
  vim.rpcrequest(ch, 'subscribe', { topics = { 'status', 'auth', 'daemon' }, deliver = 'autocmd' })
  for i = 1, rounds do
    local host = (i % 2 == 0) and 'http://127.0.0.1:9' or 'http://127.0.0.1:7'
    local ok, err = pcall(vim.rpcrequest, ch, 'settings.set', { field = 'ollama_host', value = host })
    if ok then
      ok, err = pcall(vim.rpcrequest, ch, 'keys.set', { name = 'GROQ_API_KEY', value = 'gsk_nested_' .. i })
    end
    if not ok then
      out.errors[#out.errors + 1] = tostring(err)
      break
    end
    out.rounds = i
    vim.wait(10)
  end
  vim.wait(200)  -- events still on their way run their handlers now
  local alive, pong = pcall(vim.rpcrequest, ch, 'ping')
  out.channel_alive = alive and pong == 'pong'
end

local ok, err = pcall(main)
if not ok then
  out.errors[#out.errors + 1] = tostring(err)
end
local f = io.open(os.getenv('TAKOD_NVIM_OUT'), 'w')
f:write(vim.fn.json_encode(out))
f:close()
vim.cmd('qa!')
