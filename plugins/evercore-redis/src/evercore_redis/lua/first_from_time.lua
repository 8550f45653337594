-- Find the first event (lowest id) whose time is >= a timestamp, scanning at most
-- a budget of entries per call so that a long log never blocks the server.
-- ARGV: base, timestamp (the stored 32-character UTC form, which compares as a
-- string), scan after this id, stop at this id, budget.
-- Returns {found id or 0, last scanned id, done (0/1)}.
local B, ts, after, stop, budget = ARGV[1], ARGV[2], tonumber(ARGV[3]),
  ARGV[4], tonumber(ARGV[5])
local entries = redis.call('XRANGE', B .. 'log', string.format('%d', after + 1) .. '-0',
  stop .. '-0', 'COUNT', budget)
local last = after
for _, e in ipairs(entries) do
  last = tonumber(string.match(e[1], '^(%d+)'))
  -- The "e" field is "gid:aggregate id:seq:type:reflen:" then the time (_codec.py).
  local event = e[2][4]
  local at = string.match(event, '^%d+:%d+:%d+:%d+:%d+:()')
  if string.sub(event, at, at + 31) >= ts then return {string.format('%d', last), 0, 1} end
end
local done = 0
if #entries < budget then done = 1 end
return {0, string.format('%d', last), done}
