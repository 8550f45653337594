-- Find the first (aggregate id, sequence) pair that is already stored.
-- ARGV: base, then aggregate id and sequence pairs. Returns {} or {aggregate id, sequence}.
local B = ARGV[1]
for i = 2, #ARGV, 2 do
  if redis.call('ZCOUNT', B .. 'ev:' .. ARGV[i], ARGV[i + 1], ARGV[i + 1]) > 0 then
    return {ARGV[i], ARGV[i + 1]}
  end
end
return {}
