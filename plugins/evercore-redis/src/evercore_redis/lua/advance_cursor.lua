-- Move a subscription's cursor forward (never back). With an owner, only while
-- that owner holds an unexpired lease (server clock) at the expected fencing epoch.
-- ARGV: base, subscription id, last event id, owner ("" = none), epoch ("" = unknown).
-- Returns {"ok"}, {"notfound"} or {"lost", holder, expires (us), now (us)}.
local B, id, owner = ARGV[1], ARGV[2], ARGV[4]
local k = B .. 'sub:' .. id
local f = redis.call('HMGET', k, 'last_event_id', 'lease_owner', 'lease_expires_at', 'epoch')
if not f[1] then return {'notfound'} end
if owner ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local expires = tonumber(f[3] or '0')
  if f[2] ~= owner or expires <= now or (ARGV[5] ~= '' and ARGV[5] ~= f[4]) then
    return {'lost', f[2] or '', f[3] or '', string.format('%d', now)}
  end
end
if tonumber(ARGV[3]) > tonumber(f[1]) then redis.call('HSET', k, 'last_event_id', ARGV[3]) end
return {'ok'}
