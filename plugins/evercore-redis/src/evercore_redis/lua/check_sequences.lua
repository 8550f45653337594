-- Find the first (aggregate id, sequence) pair that is already stored.
-- ARGV: base, then aggregate id and sequence pairs. Returns {} or {aggregate id, sequence}.
local B = ARGV[1]
local tops = {}
for i = 2, #ARGV, 2 do
  local id, seq = ARGV[i], ARGV[i + 1]
  local top = tops[id]
  if top == nil then
    top = tonumber(string.match(redis.call('HGET', B .. 'agg', id) or '0:0', ':(%d+)$'))
    tops[id] = top
  end
  if has_sequence(B, id, seq, top) then return {id, seq} end
end
return {}
