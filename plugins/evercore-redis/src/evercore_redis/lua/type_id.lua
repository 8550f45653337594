-- The id of an aggregate or event type, registering the name when it is new.
-- ARGV: base, kind ("atype" or "etype"), name.
local B, kind, name = ARGV[1], ARGV[2], ARGV[3]
local id = redis.call('HGET', B .. kind, name)
if id then return tonumber(id) end
id = redis.call('HINCRBY', B .. 'ctr', kind, 1)
redis.call('HSET', B .. kind, name, id)
redis.call('HSET', B .. kind .. ':id', id, name)
return id
