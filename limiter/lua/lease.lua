-- Leases' accounting, composed (after the modules, before the driver) into
-- the scripts that take a lease, give one back or reset, never into plain
-- decisions. Beside each leased key, a sorted set (its KEYS entry follows
-- the rules' keys) holds the leases still out: a member per lease,
-- "<id>:<units>:<reset_at>" (the units the commit took, the reset in ms
-- since the epoch the commit returned, which names its window), scored by
-- the ms until which its instance may use it: lease_trust after it was
-- taken (a lease lives at most leaseMaxAge on its instance, plus slack for
-- the sweep and the give-back's trip). A reset leaves exactly the units of
-- the leases still out counted; a give-back returns units only of a lease
-- still out, once. lease_trust is set by scripts.go, before this file.

-- lease_take records the lease id of units taken by the commit whose reset
-- was reset_at, in lkey.
local function lease_take(lkey, id, units, reset_at)
  redis.call('ZREMRANGEBYSCORE', lkey, '-inf', clock.ms)
  redis.call('ZADD', lkey, clock.ms + lease_trust,
    string.format('%s:%d:%.0f', id, units, reset_at))
  redis.call('PEXPIRE', lkey, lease_trust)
end

-- lease_end removes member from lkey; true if it was still out (so its
-- unused units are still counted, and given back by this call alone).
local function lease_end(lkey, member)
  local score = tonumber(redis.call('ZSCORE', lkey, member))
  if score == nil then
    return false
  end
  redis.call('ZREM', lkey, member)
  return score > clock.ms
end

-- lease_out returns the units of the leases of lkey still out, by the
-- reset_at of the commit that took them, and their total.
local function lease_out(lkey)
  local by, total = {}, 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', lkey, '(' .. clock.ms, '+inf')) do
    local units, reset_at = string.match(member, ':(%d+):(%d+)$')
    units, reset_at = tonumber(units), tonumber(reset_at)
    by[reset_at] = (by[reset_at] or 0) + units
    total = total + units
  end
  return by, total
end
