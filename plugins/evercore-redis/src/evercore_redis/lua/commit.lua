-- Apply one transaction atomically. Scripts do not roll back, so every check
-- runs before the first write: either the whole context is stored or nothing is.
--
-- ARGV: base ("{prefix}:"), then the counts of new aggregates, key changes,
-- events and snapshots, then the groups in that order:
--   new aggregate: id, aggregate type id, natural key ("" = none)
--   key change:    aggregate id, new natural key
--   event:         aggregate id, sequence, event type id, time (us), reference
--                  length (in characters, for the client's parser), reference, state
--   snapshot:      aggregate id, sequence, state
-- Returns {"ok", last event id} or {"conflict", aggregate id, sequence},
-- {"dupkey", key}, {"noagg", aggregate id}, {"exists", aggregate id}.
local B = ARGV[1]
local n_new, n_keys = tonumber(ARGV[2]), tonumber(ARGV[3])
local n_events, n_snaps = tonumber(ARGV[4]), tonumber(ARGV[5])
local K_AGG, K_AKEY, K_KEY = B .. 'agg', B .. 'akey', B .. 'key'

local agg_type = {}   -- aggregate id -> type id, for every aggregate this context touches
local released = {}   -- natural keys this context takes away from their aggregate
local claimed = {}    -- natural keys this context gives to an aggregate

local function stored_type(id)
  local t = agg_type[id]
  if t == nil then
    t = redis.call('HGET', K_AGG, id)
    if not t then return nil end
    agg_type[id] = t
  end
  return t
end

-- A key may be claimed when nobody holds it, the claimant already holds it, or
-- its holder gives it up in this same context.
local function key_free_for(key, id)
  if claimed[key] then return false end
  local holder = redis.call('HGET', K_KEY, key)
  if not holder then return true end
  local holder_id = string.match(holder, '^(%d+):')
  return holder_id == id or released[key] ~= nil
end

-- checks -------------------------------------------------------------------
local i = 6
local first_new = i
for _ = 1, n_new do
  local id, t = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', K_AGG, id) == 1 then return {'exists', id} end
  agg_type[id] = t
  i = i + 3
end
local first_key = i
for _ = 1, n_keys do
  local id = ARGV[i]
  if stored_type(id) == nil then return {'noagg', id} end
  local old = redis.call('HGET', K_AKEY, id)
  if old and old ~= ARGV[i + 1] then released[old] = id end
  i = i + 2
end
i = first_new
for _ = 1, n_new do
  local key = ARGV[i + 2]
  if key ~= '' then
    if not key_free_for(key, ARGV[i]) then return {'dupkey', key} end
    claimed[key] = true
  end
  i = i + 3
end
i = first_key
for _ = 1, n_keys do
  local key = ARGV[i + 1]
  if not key_free_for(key, ARGV[i]) then return {'dupkey', key} end
  claimed[key] = true
  i = i + 2
end
local first_event = i
for _ = 1, n_events do
  local id, seq = ARGV[i], ARGV[i + 1]
  if stored_type(id) == nil then return {'noagg', id} end
  if redis.call('ZCOUNT', B .. 'ev:' .. id, seq, seq) > 0 then return {'conflict', id, seq} end
  i = i + 7
end

-- writes -------------------------------------------------------------------
i = first_new
for _ = 1, n_new do
  local id, t, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', K_AGG, id, t)
  if key ~= '' then
    redis.call('HSET', K_AKEY, id, key)
    redis.call('HSET', K_KEY, key, id .. ':' .. t)
  end
  i = i + 3
end
for _ = 1, n_keys do
  local id, key = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', K_AKEY, id)
  if old and old ~= key then
    local holder = redis.call('HGET', K_KEY, old)
    if holder and string.match(holder, '^(%d+):') == id then redis.call('HDEL', K_KEY, old) end
  end
  redis.call('HSET', K_AKEY, id, key)
  redis.call('HSET', K_KEY, key, id .. ':' .. agg_type[id])
  i = i + 2
end
local last = tonumber(redis.call('HGET', B .. 'ctr', 'event') or '0')
if n_events > 0 then
  last = redis.call('HINCRBY', B .. 'ctr', 'event', n_events)
  local gid = last - n_events
  local log = B .. 'log'
  for _ = 1, n_events do
    gid = gid + 1
    local g = string.format('%d', gid)
    local id, seq, t, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local ref, state = ARGV[i + 5], ARGV[i + 6]
    redis.call('XADD', log, g .. '-0', 'a', id, 'at', agg_type[id], 't', t, 's', seq,
      'ts', ts, 'r', ref, 'd', state)
    redis.call('ZADD', B .. 'ev:' .. id, seq,
      g .. ':' .. seq .. ':' .. t .. ':' .. ts .. ':' .. ARGV[i + 4] .. ':' .. ref .. state)
    i = i + 7
  end
end
local K_SNAP = B .. 'snap'
for _ = 1, n_snaps do
  local id, seq = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', K_SNAP, id)
  if not current or tonumber(string.match(current, '^(%d+):')) <= tonumber(seq) then
    redis.call('HSET', K_SNAP, id, seq .. ':' .. ARGV[i + 2])
  end
  i = i + 3
end
return {'ok', last}
