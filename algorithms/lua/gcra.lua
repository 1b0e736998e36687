-- GCRA (generic cell rate algorithm), as go-redis/redis_rate and redis-cell do
-- it: the key holds the theoretical arrival time (TAT), the time at which the
-- bucket would be full again. A request of cost n is admitted if moving TAT n
-- emission intervals later keeps it within burst intervals of now.
-- key:  string, the TAT in µs since the epoch on Redis's clock; after a grant
--       beyond a full bucket "tat,credit,lapse": credit units on top of the
--       bucket, used first, kept until lapse (µs)
-- args: emission interval in µs (window / rate, rounded up), burst (capacity)
-- A cost above burst never passes: retry is burst intervals.
-- A grant of n moves TAT n intervals back; what would move it before now
-- (beyond a full bucket) becomes credit, which lapses once an empty bucket
-- would have filled again.
do
  local m = {nargs = 2}
  algorithms.gcra = m

  -- read returns TAT (at least now), the credit and its lapse.
  local function read(key, now)
    local stored = redis.call('GET', key)
    if not stored then
      return now, 0, 0
    end
    local tat = tonumber(stored)
    if tat then
      return math.max(now, tat), 0, 0
    end
    local t, credit, lapse = string.match(stored, '^(%d+),(%d+),(%d+)$')
    if not t then
      return now, 0, 0
    end
    tat, lapse = math.max(now, tonumber(t)), tonumber(lapse)
    if lapse <= now then
      return tat, 0, 0
    end
    return tat, tonumber(credit), lapse
  end

  -- write stores TAT and credit; a full bucket without credit is no key.
  local function write(key, tat, credit, lapse, now)
    if credit > 0 or lapse > now then
      -- %.0f: concatenation would write 14 digits, and µs need 16.
      redis.call('SET', key, string.format('%.0f,%d,%.0f', tat, credit, lapse), 'PX', ms(math.max(tat, lapse) - now))
    elseif tat > now then
      -- All values are whole µs, so they reach Redis as exact integers.
      redis.call('SET', key, tat, 'PX', ms(tat - now))
    else
      redis.call('DEL', key)
    end
  end

  function m.check(key, args, cost)
    local interval, burst = tonumber(args[1]), tonumber(args[2])
    local tolerance = interval * burst
    local now = clock.us
    -- A TAT in the past (or no key at all) means a full bucket.
    local tat, credit, lapse = read(key, now)
    local need = math.max(0, cost - credit)
    local c = {tat = tat, credit = credit, lapse = lapse,
      remaining = math.floor((tolerance - (tat - now)) / interval) + credit,
      reset = ms(tat - now), retry = 0}
    c.ok = cost <= burst and tat + need * interval - now <= tolerance
    if cost > burst then
      c.retry = ms(tolerance)
    elseif not c.ok then
      -- Denied requests do not move TAT. The credit helps only if it is
      -- still there when TAT has come close enough (retry rounds up to a ms).
      local at = tat + need * interval - tolerance
      if credit > 0 and at + 1000 > lapse then
        at = tat + cost * interval - tolerance
      end
      c.retry = ms(at - now)
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local interval, burst = tonumber(args[1]), tonumber(args[2])
    local now = clock.us
    local used = math.min(cost, c.credit)
    local credit = c.credit - used
    local tat = c.tat + (cost - used) * interval
    write(key, tat, credit, c.lapse, now)
    return math.floor((interval * burst - (tat - now)) / interval) + credit, ms(tat - now)
  end

  -- out: units of leases still out (lease.lua), which would not be in TAT
  -- had they not been taken: if without them the grant goes beyond a full
  -- bucket, the lapse is set, so their give-backs become credit.
  function m.grant(key, args, n, _, out)
    local interval, burst = tonumber(args[1]), tonumber(args[2])
    local now = clock.us
    local c = m.check(key, args, 0)
    local tat, credit, lapse = c.tat - n * interval, c.credit, c.lapse
    if tat - (out or 0) * interval < now then
      lapse = now + interval * burst
    end
    if tat < now then
      -- Several grants give at most one burst beyond it.
      credit = math.min(credit + math.floor((now - tat) / interval), burst)
      tat, lapse = now, now + interval * burst
    end
    write(key, tat, credit, lapse, now)
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
    if units <= 0 or redis.call('EXISTS', key) == 0 then
      return
    end
    local tat, credit, lapse = read(key, now)
    tat = tat - units * interval
    if tat < now then
      -- Before now: a full bucket, unless a grant is under way (lapse):
      -- then, had the units not been taken, that grant would have left
      -- them as credit, up to the grant cap (burst).
      if lapse > now then
        credit = math.min(credit + math.floor((now - tat) / interval), tonumber(args[2]))
      end
      tat = now
    end
    write(key, tat, credit, lapse, now)
  end

  -- Resets the quota: a full bucket but the units of leases still out
  -- (total), which stay taken; a grant's credit goes.
  function m.reset(key, args, _, total)
    redis.call('DEL', key)
    if total > 0 then
      local now = clock.us
      write(key, now + total * tonumber(args[1]), 0, 0, now)
    end
  end
end
