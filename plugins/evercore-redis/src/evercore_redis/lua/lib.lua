-- Helpers shared by the scripts (prepended to each by _scripts.py).

-- Whether an aggregate's event list already holds an event with sequence `seq`,
-- given `top`, the highest sequence stored for it. Sequences are distinct and >= 1,
-- so a list as long as its highest sequence holds exactly 1..top (the usual case:
-- no lookup at all). Only aggregates written with gaps or out of order are scanned.
local function has_sequence(B, id, seq, top)
  local n = tonumber(seq)
  if n > top or n < 1 then return false end
  local key = B .. 'ev:' .. id
  if redis.call('LLEN', key) == top then return true end
  for _, member in ipairs(redis.call('LRANGE', key, 0, -1)) do
    if string.match(member, '^%d+:%d+:(%d+):') == seq then return true end
  end
  return false
end

