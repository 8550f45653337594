-- Read the global log after an event id, keeping only entries that match a
-- subscription's filter, so non-matching events never leave the server.
-- ARGV: base, after id, limit, scan budget (entries), aggregate type id ("" = any),
-- natural key ("" = any), then the accepted event type ids (none = any).
-- Returns {last scanned id, done (0/1), entry...}; each entry is an XRANGE entry.
-- The caller continues from the last scanned id while not done and short of limit.
local B, after, limit, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- A type id the client reserved while a concurrent commit registered the same name
-- is an alias of the stored id (see commit.lua); filters compare stored ids.
local function canon(kind, id)
  if id == '' then return id end
  return redis.call('HGET', B .. kind .. ':alias', id) or id
end
local want_atype, key = canon('atype', ARGV[5]), ARGV[6]
local want_agg = nil
if key ~= '' then
  local holder = redis.call('HGET', B .. 'key', key)
  if not holder then return {string.format('%d', after), 1} end
  local id, t = string.match(holder, '^(%d+):(%d+)$')
  if want_atype ~= '' and t ~= want_atype then return {string.format('%d', after), 1} end
  want_agg = id
end
local types = nil
if #ARGV > 6 then
  types = {}
  for j = 7, #ARGV do types[canon('etype', ARGV[j])] = true end
end
local out = {0, 0}
local found, scanned, last = 0, 0, after
local chunk = math.min(budget, 1000)
while true do
  local entries = redis.call('XRANGE', B .. 'log', string.format('%d', last + 1) .. '-0', '+',
    'COUNT', chunk)
  for _, e in ipairs(entries) do
    last = tonumber(string.match(e[1], '^(%d+)'))
    scanned = scanned + 1
    -- Fields: "at" (aggregate type id), "e" ("gid:aggregate id:seq:type:...", _codec.py).
    local at = e[2][2]
    local a, t = string.match(e[2][4], '^%d+:(%d+):%d+:(%d+):')
    if (want_agg == nil or a == want_agg) and (want_atype == '' or at == want_atype)
        and (types == nil or types[t]) then
      found = found + 1
      out[found + 2] = e
      if found >= limit then
        out[1] = string.format('%d', last)
        return out
      end
    end
  end
  if #entries < chunk then
    out[1], out[2] = string.format('%d', last), 1
    return out
  end
  if scanned >= budget then
    out[1] = string.format('%d', last)
    return out
  end
end
