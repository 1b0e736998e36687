-- Token bucket: the bucket holds up to capacity tokens and refills rate tokens
-- per window, continuously; a request takes cost tokens. Tokens are stored
-- scaled by the window in ms (one token = window units, each ms adds rate
-- units), so a fractional refill is an exact integer and no float is stored.
-- key:  hash of the identity {t = tokens × window_ms, ts = ms of t}
-- args: rate (tokens per window), window in ms, capacity
-- A cost above capacity never passes: retry is the time to fill the bucket.
do
  local m = {nargs = 3}
  algorithms.token_bucket = m

  function m.check(key, args, cost)
    local rate, window, capacity = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    local full = capacity * window
    local now = clock.ms
    -- A missing key is a full bucket: expiry only removes buckets that were full.
    local state = redis.call('HMGET', key, 't', 'ts')
    local tokens = full
    local last = tonumber(state[2])
    if last then
      -- max(): if the clock steps back (failover), refill nothing rather than
      -- refilling the same interval twice.
      tokens = math.min(full, tonumber(state[1]) + math.max(0, now - last) * rate)
      now = math.max(now, last)
    end
    -- ms until the bucket has gained units, rounded up.
    local function after(units)
      return math.ceil(units / rate)
    end
    local c = {tokens = tokens, now = now, remaining = math.floor(tokens / window),
      reset = after(full - tokens), retry = 0}
    c.ok = cost <= capacity and cost * window <= tokens
    if cost > capacity then
      c.retry = after(full)
    elseif not c.ok then
      -- Denied requests change nothing: the stored state already implies the refill.
      c.retry = after(cost * window - tokens)
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local rate, window, capacity = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    local tokens = c.tokens - cost * window
    local reset = math.ceil((capacity * window - tokens) / rate)
    redis.call('HSET', key, 't', tokens, 'ts', c.now)
    -- Once full again the key carries no information.
    redis.call('PEXPIRE', key, reset)
    return math.floor(tokens / window), reset
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
    local state = redis.call('HMGET', key, 't', 'ts')
    local last = tonumber(state[2])
    if units <= 0 or not last then
      return
    end
    local now = math.max(clock.ms, last)
    local tokens = math.min(full, tonumber(state[1]) + (now - last) * rate + units * window)
    redis.call('HSET', key, 't', tokens, 'ts', now)
    redis.call('PEXPIRE', key, math.max(1, math.ceil((full - tokens) / rate)))
  end
end
