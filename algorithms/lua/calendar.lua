-- Calendar quota: limit requests per calendar period (day, ISO week, month)
-- in a time zone. Go computes the period starts around its own now (the
-- first instant of each period's first day: local midnight, or where the
-- clock skips midnight, the instant it skips to; so a day is 23 or 25 hours
-- across a daylight-saving change), always increasing: no period is empty.
-- The period is picked here by Redis's clock, so instances whose clocks
-- differ still count in the same period.
-- key:  hash of the identity {p = period start ms, n = admitted in it}
-- args: limit, then the starts (ms) of the period before the current one,
--       of the current one and of the two after it
-- A cost above limit never passes: retry is the end of the period.
do
  local m = {nargs = 5}
  algorithms.calendar = m

  -- The period holding now among the three the arguments bound: its start
  -- and end. They reach at least a period either side of the caller's
  -- clock; a Redis clock beyond them cannot be counted right, and says so.
  local function period(args)
    local now = clock.ms
    local b = {tonumber(args[2]), tonumber(args[3]), tonumber(args[4]), tonumber(args[5])}
    for i = 3, 1, -1 do
      if now >= b[i] and now < b[i + 1] then
        return b[i], b[i + 1]
      end
    end
    error('calendar: Redis clock ' .. now .. ' is more than a period away from the caller\'s (periods ' .. b[1] .. ' to ' .. b[4] .. ')')
  end

  function m.check(key, args, cost)
    local limit = tonumber(args[1])
    local now = clock.ms
    local start, stop = period(args)
    -- The stored period start, not the key's TTL, decides whether the count is current.
    local state = redis.call('HMGET', key, 'p', 'n')
    local used = 0
    if tonumber(state[1]) == start then
      used = tonumber(state[2]) or 0
    end
    local c = {start = start, stop = stop, used = used, remaining = limit - used, reset = 0, retry = 0}
    if used > 0 then
      c.reset = stop - now
    end
    c.ok = cost <= limit - used
    if not c.ok then
      c.retry = stop - now
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local limit = tonumber(args[1])
    local used = c.used + cost
    local reset = c.stop - clock.ms
    redis.call('HSET', key, 'p', c.start, 'n', used)
    -- The key expires when its period ends: set as the period's count
    -- starts (HSET keeps a key's expiry).
    if c.used == 0 then
      redis.call('PEXPIRE', key, reset)
    end
    return limit - used, reset
  end

  -- A grant lowers this period's count: a support desk's "one more try
  -- today". Several grants give at most one limit beyond it; the key, and
  -- the grant with it, ends with the period.
  function m.grant(key, args, n)
    local c = m.check(key, args, 0)
    redis.call('HSET', key, 'p', c.start, 'n', math.max(c.used - n, -tonumber(args[1])))
    redis.call('PEXPIRE', key, c.stop - clock.ms)
  end
end
