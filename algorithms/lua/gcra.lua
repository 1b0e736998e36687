-- GCRA (generic cell rate algorithm), as go-redis/redis_rate and redis-cell do
-- it: the key holds the theoretical arrival time (TAT), the time at which the
-- bucket would be full again. A request of cost n is admitted if moving TAT n
-- emission intervals later keeps it within burst intervals of now.
-- key:  string, the TAT in µs since the epoch on Redis's clock
-- args: emission interval in µs (window / rate, rounded up), burst (capacity)
-- A cost above burst never passes: retry is burst intervals.
do
  local m = {nargs = 2}
  algorithms.gcra = m

  function m.check(key, args, cost)
    local interval, burst = tonumber(args[1]), tonumber(args[2])
    local tolerance = interval * burst
    local now = clock.us
    -- A TAT in the past (or no key at all) means a full bucket.
    local tat = now
    local stored = redis.call('GET', key)
    if stored then
      tat = math.max(now, tonumber(stored))
    end
    local c = {tat = tat, remaining = math.floor((tolerance - (tat - now)) / interval),
      reset = ms(tat - now), retry = 0}
    c.ok = cost <= burst and tat + cost * interval - now <= tolerance
    if cost > burst then
      c.retry = ms(tolerance)
    elseif not c.ok then
      -- Denied requests do not move TAT.
      c.retry = ms(tat + cost * interval - tolerance - now)
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local interval, burst = tonumber(args[1]), tonumber(args[2])
    local now = clock.us
    local tat = c.tat + cost * interval
    -- All values are whole µs, so they reach Redis as exact integers.
    redis.call('SET', key, tat, 'PX', ms(tat - now))
    return math.floor((interval * burst - (tat - now)) / interval), ms(tat - now)
  end

  -- Gives back units leased and not used by moving TAT back. Had they never
  -- been taken, TAT would have reached now (a full bucket) units intervals
  -- before reset_at; what that can have lost is not given back.
  function m.refund(key, args, units, reset_at)
    local interval = tonumber(args[1])
    local now = clock.us
    -- reset_at is whole ms, up to 1 ms after TAT: counted from 1 ms earlier.
    local lost = math.max(0, now - ((reset_at - 1) * 1000 - units * interval))
    units = units - math.ceil(lost / interval)
    local stored = redis.call('GET', key)
    if units <= 0 or not stored then
      return
    end
    local tat = math.max(now, tonumber(stored) - units * interval)
    if tat <= now then
      redis.call('DEL', key)
    else
      redis.call('SET', key, tat, 'PX', ms(tat - now))
    end
  end
end
