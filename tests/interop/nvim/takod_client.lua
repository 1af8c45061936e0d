-- Drives a stock Neovim (no plugins) as a takod client; run by tests/interop/test_neovim.py.
--
--   TAKOD_NVIM_SOCKET  the daemon's socket path
--   TAKOD_NVIM_OUT     JSON results file, written once at the end
--   TAKOD_NVIM_READY   file written once the subscription exists (the test then sends SIGHUP)
--   TAKOD_NVIM_WAIT_MS how long to wait for the event
--
-- Every step records what it saw; the test decides what is right. Nvim always
-- quits on its own, even when a step throws.

local out = { steps = {} }

local function step(name, fn)
  local ok, value = pcall(fn)
  out.steps[#out.steps + 1] = name
  if ok then
    out[name] = value
  else
    out[name .. '_error'] = tostring(value)
  end
  return ok, value
end

local function main()
  local socket = os.getenv('TAKOD_NVIM_SOCKET')
  local wait_ms = tonumber(os.getenv('TAKOD_NVIM_WAIT_MS') or '20000')
  out.nvim_pid = vim.fn.getpid()
  out.has_nvim_08 = vim.fn.has('nvim-0.8') == 1

  local ch = vim.fn.sockconnect('pipe', socket, { rpc = true })
  out.channel = ch
  if ch == 0 then
    error('sockconnect failed for ' .. tostring(socket))
  end

  step('status', function() return vim.rpcrequest(ch, 'status') end)
  step('ping', function() return vim.rpcrequest(ch, 'ping') end)

  -- An unknown method is an error for this call only; the channel stays open.
  local ok, err = pcall(vim.rpcrequest, ch, 'no.such')
  out.no_such = { ok = ok, error = tostring(err) }
  step('ping_after_error', function() return vim.rpcrequest(ch, 'ping') end)

  -- Lua's {} goes out as an empty msgpack array.
  step('status_empty_table', function() return vim.rpcrequest(ch, 'status', {}) end)

  -- Events as User autocmds: g:takod_event works everywhere, ev.data from nvim 0.8.
  out.events = {}
  vim.api.nvim_create_autocmd('User', {
    pattern = 'TakodEvent',
    callback = function(ev)
      out.events[#out.events + 1] = {
        g = vim.g.takod_event,
        data = ev.data == nil and 'absent' or ev.data,
        match = ev.match,
      }
    end,
  })
  local subscribed = step('subscribe', function()
    return vim.rpcrequest(ch, 'subscribe', { topics = { 'daemon' }, deliver = 'autocmd' })
  end)
  if not subscribed then
    return
  end

  vim.fn.writefile({ 'subscribed' }, os.getenv('TAKOD_NVIM_READY'))
  out.event_arrived = vim.wait(wait_ms, function() return #out.events > 0 end, 10)

  step('ping_after_event', function() return vim.rpcrequest(ch, 'ping') end)
  out.chanclose = vim.fn.chanclose(ch)
end

local ok, err = pcall(main)
out.ok = ok
if not ok then
  out.error = tostring(err)
end
local encoded_ok, encoded = pcall(vim.fn.json_encode, out)
if not encoded_ok then
  encoded = vim.fn.json_encode({ ok = false, error = 'json_encode failed: ' .. tostring(encoded) })
end
vim.fn.writefile({ encoded }, os.getenv('TAKOD_NVIM_OUT'))
vim.cmd('qa!')
