-- Fixed window: a window opens with the first request after the previous one
-- closed (as in the tutorial: a counter that lives for one window), and admits
-- up to limit requests until it closes.
-- key:  hash of the identity {w = window start ms, n = admitted in it}
-- args: limit (requests per window), window in ms
-- A cost above limit never passes: retry is one window.
-- A grant of n lowers the current window's count by n, below zero if need be
-- (the window then admits up to twice the limit), and lapses as the window
-- closes; with no window open, the grant opens one.
do
  local m = {nargs = 2}
  algorithms.fixed_window = m

  function m.check(key, args, cost)
    local limit, window = tonumber(args[1]), tonumber(args[2])
    local now = clock.ms
    -- The stored window start, not the key's TTL, decides whether the count is
    -- current: expiry only collects garbage.
    local state = redis.call('HMGET', key, 'w', 'n')
    local start = tonumber(state[1])
    local used = tonumber(state[2]) or 0
    if start == nil or now >= start + window then
      start, used = now, 0
    end
    local c = {start = start, used = used, remaining = limit - used, reset = 0, retry = 0}
    if used > 0 then
      c.reset = start + window - now
    end
    c.ok = cost <= limit - used
    if cost > limit then
      c.retry = window
    elseif not c.ok then
      c.retry = start + window - now
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local limit, window = tonumber(args[1]), tonumber(args[2])
    local used = c.used + cost
    local reset = c.start + window - clock.ms
    -- The key expires when its window closes: set once, as the window opens
    -- (HINCRBY keeps a key's expiry), not on every request; within a window
    -- only the count changes.
    if c.used == 0 then
      redis.call('HSET', key, 'w', c.start, 'n', used)
      redis.call('PEXPIRE', key, reset)
    else
      redis.call('HINCRBY', key, 'n', cost)
    end
    return limit - used, reset
  end

  -- by: units of the leases still out by the reset their commit returned
  -- (lease.lua); this window's stay counted beyond the cap, so that their
  -- exact give-backs never take the count below it (those used before the
  -- grant stay counted: under-admission, as at a reset).
  function m.grant(key, args, n, _, _, by)
    local window = tonumber(args[2])
    local c = m.check(key, args, 0)
    local out = by and by[c.start + window] or 0
    -- Several grants give at most one limit beyond it.
    redis.call('HSET', key, 'w', c.start, 'n', math.max(c.used - n, out - tonumber(args[1])))
    redis.call('PEXPIRE', key, c.start + window - clock.ms)
  end

  -- Gives back units leased and not used, if the window that counted them
  -- is still the stored one (a later window never counted them): exactly,
  -- so a grant made meanwhile is kept whole. Never below the grant cap: a
  -- grant left the units of the leases out counted (m.grant).
  function m.refund(key, args, units, reset_at)
    local window = tonumber(args[2])
    local state = redis.call('HMGET', key, 'w', 'n')
    if tonumber(state[1]) == reset_at - window then
      redis.call('HSET', key, 'n', (tonumber(state[2]) or 0) - units)
    end
  end

  -- Resets the quota, leaving counted the units of leases still out of the
  -- current window (out: units by the reset their commit returned, which
  -- is the window's end); the window keeps its start, so their give-backs
  -- still find it.
  function m.reset(key, args, out)
    local window = tonumber(args[2])
    local start = tonumber(redis.call('HGET', key, 'w'))
    local units = start and out[start + window] or 0
    if units == 0 or clock.ms >= start + window then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'n', units)
    end
  end
end
