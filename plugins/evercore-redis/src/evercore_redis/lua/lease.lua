-- Claim, renew or release a subscription's lease, judged by the server's clock.
-- Only an active subscription can be claimed (as in Go); renew does not look at
-- the switch: a runner learns that it was switched off from its next poll.
-- ARGV: base, mode ("claim", "renew", "release"), name, owner, lease (us),
-- fencing epoch the caller last got ("" = unknown).
-- Returns {1, epoch, subscription id} on success, {0} otherwise. Every successful
-- claim bumps the epoch, so a runner that lost its lease (even to a runner with the
-- same owner name) is refused by renew and by advance_subscription_cursor.
local B, mode, name, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local id = redis.call('HGET', B .. 'sub', name)
if not id then return {0} end
local k = B .. 'sub:' .. id
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('HMGET', k, 'active', 'lease_owner', 'lease_expires_at', 'epoch')
local active, holder, expires, epoch = f[1], f[2], tonumber(f[3] or '0'), f[4] or '0'
local live = holder and expires > now
local ours = holder == owner and (ARGV[6] == '' or ARGV[6] == epoch)
if mode == 'claim' then
  if active ~= '1' or (live and holder ~= owner) then return {0} end
  epoch = string.format('%d', tonumber(epoch) + 1)
  redis.call('HSET', k, 'lease_owner', owner,
    'lease_expires_at', string.format('%d', now + tonumber(ARGV[5])), 'epoch', epoch)
  return {1, epoch, id}
elseif mode == 'renew' then
  if not (live and ours) then return {0} end
  redis.call('HSET', k, 'lease_expires_at', string.format('%d', now + tonumber(ARGV[5])))
  return {1, epoch, id}
end
if ours then redis.call('HDEL', k, 'lease_owner', 'lease_expires_at') end
return {1, epoch, id}
