-- Create or update a durable subscription by name; returns its id.
-- ARGV: base, name, aggregate type id, event type id, aggregate key, start from,
-- start event id, start timestamp (us), initial cursor. Empty strings are None.
-- An empty initial cursor means "the highest event id now": read here, inside
-- the script, no commit can slip in between the read and the cursor's creation.
local B, name = ARGV[1], ARGV[2]
local nullable = {
  aggregate_type_id = ARGV[3], event_type_id = ARGV[4], aggregate_key = ARGV[5],
  start_timestamp = ARGV[8],
}
local id = redis.call('HGET', B .. 'sub', name)
local created = false
if not id then
  id = string.format('%d', redis.call('HINCRBY', B .. 'ctr', 'sub', 1))
  created = true
end
local k = B .. 'sub:' .. id
redis.call('HSET', k, 'name', name, 'start_from', ARGV[6], 'start_event_id', ARGV[7])
for field, value in pairs(nullable) do
  if value == '' then redis.call('HDEL', k, field) else redis.call('HSET', k, field, value) end
end
if created then
  local cursor = ARGV[9]
  if cursor == '' then cursor = redis.call('HGET', B .. 'ctr', 'event') or '0' end
  redis.call('HSET', k, 'last_event_id', cursor, 'active', '1', 'epoch', '0')
  redis.call('HSET', B .. 'sub', name, id)
end
return tonumber(id)
