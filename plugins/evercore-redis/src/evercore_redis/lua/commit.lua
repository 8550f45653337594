-- Apply one transaction atomically. Scripts do not roll back, so every check
-- runs before the first write: either the whole context is stored or nothing is.
--
-- ARGV: base ("{prefix}:"), then eight counts, then the groups in this order:
--   type:           kind ("atype"/"etype"), id reserved by the client, name
--   new aggregate:  id, aggregate type id, natural key ("" = none)
--   key change:     aggregate id, new natural key
--   subscription:   id (reserved by the client, or the stored one), name, aggregate type
--                   id, event type id, aggregate key (these three "" = None), start
--                   from, start event id, start time (us, "" = None), initial cursor
--                   ("" = the last event id at this point, before this context's events)
--   event:          one argument, "aggregate id:seq:type:reflen:" + time + reference
--                   + state (see _codec.py); stored as "<global event id>:" + it
--   snapshot:       aggregate id, sequence, state
--   filter type:    subscription id, event type id (multi-type filter, idempotent)
--   switch:         subscription id, "1" (active) or "0"
-- Returns {"ok", last event id, reserved subscription id, actual id, ...} or
-- {"conflict", aggregate id, sequence}, {"dupkey", key}, {"noagg", aggregate id},
-- {"exists", aggregate id}, {"nosub", subscription id}.
--
-- Type names and subscription names may have been registered by a concurrent
-- commit since the client reserved an id: the stored id wins and the reserved one
-- becomes an alias ("<kind>:alias" hash), translated wherever ids are written.
local B = ARGV[1]
local n_types, n_new, n_keys, n_subs = tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5])
local n_events, n_snaps, n_filters, n_switches = tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9])
local K_AGG, K_AKEY, K_KEY, K_SUB = B .. 'agg', B .. 'akey', B .. 'key', B .. 'sub'
local SLICE = 1000    -- values per unpack(): Lua's C stack holds at most ~8000

local canonical = {atype = {}, etype = {}}   -- kind -> id -> the id stored for its name
local function canon(kind, id)
  if id == '' then return id end
  local c = canonical[kind][id]
  if c == nil then
    c = redis.call('HGET', B .. kind .. ':alias', id) or id
    canonical[kind][id] = c
  end
  return c
end

-- The "agg" hash holds "<type id>:<highest stored sequence>" per aggregate, so an
-- append above that sequence needs no per-event duplicate lookup.
local agg_type = {}   -- aggregate id -> type id, for every aggregate this context touches
local agg_top = {}    -- aggregate id -> highest stored sequence (0 for a new aggregate)
local new_top = {}    -- aggregate id -> highest sequence once this context is written
local released = {}   -- natural keys this context takes away from their aggregate
local claimed = {}    -- natural keys this context gives to an aggregate

local function stored_type(id)
  local t = agg_type[id]
  if t == nil then
    local stored = redis.call('HGET', K_AGG, id)
    if not stored then return nil end
    local top
    t, top = string.match(stored, '^(%d+):(%d+)$')
    agg_type[id], agg_top[id] = t, tonumber(top)
  end
  return t
end

-- A key may be claimed when nobody holds it, the claimant already holds it, or
-- its holder gives it up in this same context.
local function key_free_for(key, id)
  if claimed[key] then return false end
  local holder = redis.call('HGET', K_KEY, key)
  if not holder then return true end
  return string.match(holder, '^(%d+):') == id or released[key] ~= nil
end

-- checks -------------------------------------------------------------------
local i = 10
local first_type = i
local new_names = {}
for _ = 1, n_types do
  local kind, id, name = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local stored = redis.call('HGET', B .. kind, name)
  if stored then
    canonical[kind][id] = stored
  else
    canonical[kind][id] = id
    new_names[i] = true
  end
  i = i + 3
end
local first_new = i
for _ = 1, n_new do
  local id = ARGV[i]
  if redis.call('HEXISTS', K_AGG, id) == 1 then return {'exists', id} end
  agg_type[id], agg_top[id] = canon('atype', ARGV[i + 1]), -1  -- -1: not stored yet
  i = i + 3
end
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
for _ = 1, n_keys do
  local key = ARGV[i + 1]
  if not key_free_for(key, ARGV[i]) then return {'dupkey', key} end
  claimed[key] = true
  i = i + 2
end
local sub_ids = {}    -- reserved subscription id -> the id stored for its name
local sub_new = {}    -- reserved subscription id -> true when this context creates it
local result = {'ok', 0}
for _ = 1, n_subs do
  local reserved, name = ARGV[i], ARGV[i + 1]
  local stored = redis.call('HGET', K_SUB, name)
  sub_ids[reserved] = stored or reserved
  sub_new[reserved] = not stored
  result[#result + 1] = reserved
  result[#result + 1] = stored or reserved
  i = i + 9
end
-- Events: parse each one's ids once, fetch every aggregate not seen yet with one
-- HMGET (a call per aggregate costs about as much as the rest of its check), then
-- check in event order so that the first bad event is the one reported.
local event_agg, event_seq = {}, {}
local unseen, n_unseen = {}, 0
for k = 1, n_events do
  local id, seq = string.match(ARGV[i], '^(%d+):(%d+):')
  event_agg[k], event_seq[k] = id, seq
  if agg_type[id] == nil and unseen[id] == nil then
    n_unseen = n_unseen + 1
    unseen[id], unseen[n_unseen] = true, id
  end
  i = i + 1
end
for first = 1, n_unseen, SLICE do
  local stop = math.min(first + SLICE - 1, n_unseen)
  local stored = redis.call('HMGET', K_AGG, unpack(unseen, first, stop))
  for k = first, stop do
    local value = stored[k - first + 1]
    if value then
      local t, top = string.match(value, '^(%d+):(%d+)$')
      agg_type[unseen[k]], agg_top[unseen[k]] = t, tonumber(top)
    end
  end
end
for k = 1, n_events do
  local id, seq = event_agg[k], event_seq[k]
  local top = agg_top[id]
  if top == nil then return {'noagg', id} end
  local n = tonumber(seq)
  if n <= top and has_sequence(B, id, seq, top) then return {'conflict', id, seq} end
  if n > (new_top[id] or top) then new_top[id] = n end
end
i = i + 3 * n_snaps
for _ = 1, n_filters + n_switches do
  local id = sub_ids[ARGV[i]] or ARGV[i]
  if redis.call('EXISTS', B .. 'sub:' .. id) == 0 and sub_ids[ARGV[i]] == nil then
    return {'nosub', ARGV[i]}
  end
  i = i + 2
end

-- writes -------------------------------------------------------------------
i = first_type
for _ = 1, n_types do
  local kind, id, name = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if new_names[i] then
    redis.call('HSET', B .. kind, name, id)
    redis.call('HSET', B .. kind .. ':id', id, name)
  else
    redis.call('HSET', B .. kind .. ':alias', id, canonical[kind][id])
  end
  i = i + 3
end
for _ = 1, n_new do
  local id, key = ARGV[i], ARGV[i + 2]
  if key ~= '' then
    redis.call('HSET', K_AKEY, id, key)
    redis.call('HSET', K_KEY, key, id .. ':' .. agg_type[id])
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
-- The last event id before this context: new subscriptions may start there, and
-- a context without events returns it (with events, HINCRBY below gives it).
local last = 0
if n_subs > 0 or n_events == 0 then
  last = tonumber(redis.call('HGET', B .. 'ctr', 'event') or '0')
end
for _ = 1, n_subs do
  local reserved, name = ARGV[i], ARGV[i + 1]
  local id = sub_ids[reserved]
  local k = B .. 'sub:' .. id
  local nullable = {
    aggregate_type_id = canon('atype', ARGV[i + 2]), event_type_id = canon('etype', ARGV[i + 3]),
    aggregate_key = ARGV[i + 4], start_timestamp = ARGV[i + 7],
  }
  redis.call('HSET', k, 'name', name, 'start_from', ARGV[i + 5], 'start_event_id', ARGV[i + 6])
  for field, value in pairs(nullable) do
    if value == '' then redis.call('HDEL', k, field) else redis.call('HSET', k, field, value) end
  end
  if sub_new[reserved] then  -- created now: the cursor is set once, here
    local cursor = ARGV[i + 8]
    if cursor == '' then cursor = string.format('%d', last) end
    redis.call('HSET', k, 'last_event_id', cursor, 'active', '1', 'epoch', '0')
    redis.call('HSET', K_SUB, name, id)
  end
  i = i + 9
end
if n_events > 0 then
  last = redis.call('HINCRBY', B .. 'ctr', 'event', n_events)
  local gid = last - n_events
  local log = B .. 'log'
  -- Event type ids need translating only where an alias exists (a reserved id that
  -- lost a race for its name): the norm is none, which saves a lookup per event.
  local retype = redis.call('EXISTS', B .. 'etype:alias') == 1
  for id, c in pairs(canonical.etype) do retype = retype or id ~= c end
  -- A context's events for one aggregate are usually consecutive: append each run
  -- of them with one RPUSH (in slices), reusing one table for every run.
  local run_id, run, run_n = nil, {}, 0
  for k = 1, n_events do
    gid = gid + 1
    local g = string.format('%d', gid)
    local id, event = event_agg[k], ARGV[i]
    if retype then
      local seq, t = event_seq[k], string.match(event, '^%d+:%d+:(%d+):')
      local stored_t = canon('etype', t)
      if stored_t ~= t then  -- put the stored type id in place of the alias
        event = id .. ':' .. seq .. ':' .. stored_t .. string.sub(event, #id + #seq + #t + 3)
      end
    end
    local member = g .. ':' .. event
    redis.call('XADD', log, g, 'at', agg_type[id], 'e', member)  -- entry id g-0
    if id ~= run_id or run_n == SLICE then
      if run_n > 0 then redis.call('RPUSH', B .. 'ev:' .. run_id, unpack(run, 1, run_n)) end
      run_id, run_n = id, 0
    end
    run_n = run_n + 1
    run[run_n] = member
    i = i + 1
  end
  redis.call('RPUSH', B .. 'ev:' .. run_id, unpack(run, 1, run_n))
end
-- One HSET for every aggregate whose highest sequence moved (in slices).
local tops, n_tops = {}, 0
for id, top in pairs(agg_top) do
  local highest = math.max(new_top[id] or top, 0)
  if highest ~= top then
    tops[n_tops + 1], tops[n_tops + 2] = id, agg_type[id] .. ':' .. string.format('%d', highest)
    n_tops = n_tops + 2
  end
end
for first = 1, n_tops, 2 * SLICE do
  redis.call('HSET', K_AGG, unpack(tops, first, math.min(first + 2 * SLICE - 1, n_tops)))
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
for _ = 1, n_filters do
  local id = sub_ids[ARGV[i]] or ARGV[i]
  redis.call('SADD', B .. 'sub:' .. id .. ':et', canon('etype', ARGV[i + 1]))
  i = i + 2
end
for _ = 1, n_switches do
  local id = sub_ids[ARGV[i]] or ARGV[i]
  redis.call('HSET', B .. 'sub:' .. id, 'active', ARGV[i + 1])
  i = i + 2
end
result[2] = last
return result
