-- Token bucket: the bucket holds up to capacity tokens and refills rate tokens
-- per window, continuously; a request takes cost tokens. Tokens are stored
-- scaled by the window in ms (one token = window units, each ms adds rate
-- units), so a fractional refill is an exact integer and no float is stored.
-- key:  hash of the identity {t = tokens × window_ms, ts = ms of t,
--       x = ms until which tokens beyond capacity (a grant's) are kept}
-- args: rate (tokens per window), window in ms, capacity
-- A cost above capacity never passes: retry is the time to fill the bucket.
-- A grant of n adds n tokens, beyond capacity if need be (up to twice it):
-- tokens beyond it do not refill, and lapse once an empty bucket would have
-- filled again (x).
do
  local m = {nargs = 3}
  algorithms.token_bucket = m

  function m.check(key, args, cost)
    local rate, window, capacity = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    local full = capacity * window
    local now = clock.ms
    -- A missing key is a full bucket: expiry only removes buckets that were full.
    local state = redis.call('HMGET', key, 't', 'ts', 'x')
    local tokens = full
    local last = tonumber(state[2])
    local lapse = tonumber(state[3]) or 0
    if last then
      local stored = tonumber(state[1])
      local top = full
      if stored > full and now < lapse then
        top = stored
      end
      -- max(): if the clock steps back (failover), refill nothing rather than
      -- refilling the same interval twice.
      tokens = math.min(top, stored + math.max(0, now - last) * rate)
      now = math.max(now, last)
    end
    -- ms until the bucket has gained units, rounded up.
    local function after(units)
      return math.ceil(units / rate)
    end
    local c = {tokens = tokens, now = now, lapse = lapse, remaining = math.floor(tokens / window),
      reset = after(math.max(0, full - tokens)), retry = 0}
    c.ok = cost <= capacity and cost * window <= tokens
    if cost > capacity then
      c.retry = after(full)
    elseif not c.ok then
      -- Denied requests change nothing: the stored state already implies the
      -- refill. A bucket that denies holds no tokens beyond capacity.
      c.retry = after(cost * window - tokens)
    end
    return c
  end

  -- write stores tokens as of c.now; the key lives until the bucket is full
  -- again (then it carries no information), or until tokens beyond capacity
  -- lapse.
  local function write(key, args, c, tokens)
    local rate, window, capacity = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    local reset = math.ceil(math.max(0, capacity * window - tokens) / rate)
    redis.call('HSET', key, 't', tokens, 'ts', c.now)
    redis.call('PEXPIRE', key, math.max(reset, c.lapse - clock.ms, 1))
    return math.floor(tokens / window), reset
  end

  function m.commit(key, args, cost, c)
    return write(key, args, c, c.tokens - cost * tonumber(args[2]))
  end

  -- out: units of leases still out (lease.lua), which would be in the
  -- bucket had they not been taken: with them the bucket may go beyond
  -- the capacity, and then their give-backs keep what is beyond it.
  function m.grant(key, args, n, _, out)
    local rate, window, capacity = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    local c = m.check(key, args, 0)
    -- Several grants give at most one capacity beyond it.
    local tokens = math.min(c.tokens + n * window, 2 * capacity * window)
    if tokens + (out or 0) * window > capacity * window then
      c.lapse = clock.ms + math.ceil(capacity * window / rate)
      redis.call('HSET', key, 'x', c.lapse)
    end
    write(key, args, c, tokens)
  end

  -- Gives back units leased and not used. Had they never been taken, the
  -- bucket would have been full (and lost refill) from the time its reset
  -- came units' refill earlier; what that can have lost is not given back,
  -- so a give-back never leaves more tokens than without the lease.
  function m.refund(key, args, units, reset_at)
    local rate, window, capacity = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    local full = capacity * window
    -- reset_at is rounded up to whole ms: counted from 1 ms earlier.
    local lost = math.max(0, clock.ms - (reset_at - 1 - math.ceil(units * window / rate)))
    units = units - math.ceil(lost * rate / window)
    local state = redis.call('HMGET', key, 't', 'ts', 'x')
    local last = tonumber(state[2])
    if units <= 0 or not last then
      return
    end
    local now = math.max(clock.ms, last)
    local stored, lapse = tonumber(state[1]), tonumber(state[3]) or 0
    local tokens
    if stored + units * window > full and now < lapse then
      -- A grant's tokens beyond the capacity are kept (no refill beyond
      -- it): had the units not been taken, the bucket would hold them on
      -- top, up to the grant cap, twice the capacity (the refill since the
      -- last write is not added: it may not have happened without them).
      tokens = math.min(2 * full, stored + units * window)
    else
      tokens = math.min(math.max(full, stored), stored + (now - last) * rate + units * window)
    end
    redis.call('HSET', key, 't', tokens, 'ts', now)
    redis.call('PEXPIRE', key, math.max(1, math.ceil((full - tokens) / rate), lapse - clock.ms))
  end

  -- Resets the quota: a full bucket but the units of leases still out
  -- (total), which stay taken; a grant's tokens go.
  function m.reset(key, args, _, total)
    if total == 0 then
      redis.call('DEL', key)
      return
    end
    redis.call('DEL', key)
    write(key, args, {now = clock.ms, lapse = 0}, (tonumber(args[3]) - total) * tonumber(args[2]))
  end
end
