-- Sliding window counter: the two-counter approximation used by Cloudflare and
-- Python's limits. It counts admissions in fixed windows aligned to multiples
-- of the window on Redis's clock and estimates the last window-long span as
--   current + previous × (window - elapsed) / window,
-- assuming the previous window's requests were spread evenly. A request is
-- admitted if the estimate plus its cost stays within the limit. Every
-- comparison is scaled by the window in ms, so the arithmetic is exact integers.
-- key:  hash of the identity {w = current window start ms,
--       c = admitted in it, p = admitted in the window before}
-- args: limit (requests per window), window in ms
-- A cost above limit never passes: retry is two windows.
-- A grant of n lowers the current window's count by n, below zero if need be:
-- like a request in reverse, it weighs fully in this window and fades out
-- over the next one.
do
  local m = {nargs = 2}
  algorithms.sliding_window = m

  function m.check(key, args, cost)
    local limit, window = tonumber(args[1]), tonumber(args[2])
    local now = clock.ms
    local start = now - (now % window)
    local elapsed = now - start

    -- The stored window start, not the key's TTL, decides what the counts mean.
    local state = redis.call('HMGET', key, 'w', 'c', 'p')
    local stored = tonumber(state[1])
    local cur, prev = 0, 0
    if stored == start then
      cur = tonumber(state[2]) or 0
      prev = tonumber(state[3]) or 0
    elseif stored == start - window then
      prev = tonumber(state[2]) or 0
    end

    -- Until the estimate is zero: this window's count weighs until the end of
    -- the next window, the previous window's until the end of this one.
    local reset = 0
    if cur > 0 then
      reset = start + 2 * window - now
    elseif prev > 0 then
      reset = start + window - now
    end

    -- budget: how far cur × window may go.
    local budget = limit * window - prev * (window - elapsed)
    local c = {start = start, stored = stored, cur = cur, prev = prev, budget = budget,
      remaining = math.floor((budget - cur * window) / window), reset = reset, retry = 0}
    -- cost × window against what is left: both sides stay below 2^53.
    c.ok = cost <= limit and cost * window <= budget - cur * window
    if cost > limit then
      c.retry = 2 * window
    elseif not c.ok then
      -- Denied requests are not counted. Next admission: later in this window,
      -- once the previous window's weight has dropped enough, or else in the
      -- next window, once this window's (then previous) weight has.
      if prev > 0 and cur + cost <= limit then
        c.retry = window - math.floor((limit - cur - cost) * window / prev) - elapsed
      else
        c.retry = 2 * window - math.floor((limit - cost) * window / cur) - elapsed
      end
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local window = tonumber(args[2])
    local cur = c.cur + cost
    local reset = c.start + 2 * window - clock.ms
    if c.stored == c.start then
      -- The window is stored, and with it its expiry (every write of a
      -- window's start sets it to the end of the next window): only the
      -- count changes.
      redis.call('HINCRBY', key, 'c', cost)
    else
      redis.call('HSET', key, 'w', c.start, 'c', cur, 'p', c.prev)
      redis.call('PEXPIRE', key, reset)
    end
    return math.floor((c.budget - cur * window) / window), reset
  end

  -- by: units of the leases still out by the reset their commit returned
  -- (lease.lua); this window's stay counted beyond the cap, so that their
  -- exact give-backs never take the count below it (those used before the
  -- grant stay counted: under-admission, as at a reset).
  function m.grant(key, args, n, _, _, by)
    local window = tonumber(args[2])
    local c = m.check(key, args, 0)
    local out = by and by[c.start + 2 * window] or 0
    -- Several grants give at most one limit beyond it.
    redis.call('HSET', key, 'w', c.start, 'c', math.max(c.cur - n, out - tonumber(args[1])), 'p', c.prev)
    redis.call('PEXPIRE', key, c.start + 2 * window - clock.ms)
  end

  -- Gives back units leased and not used: from the count of the window that
  -- took them, current or (after a later commit) previous; exactly, so a
  -- grant made meanwhile (a count below zero) is kept whole. Never below the
  -- grant cap: a grant left the units of the leases out counted (m.grant).
  function m.refund(key, args, units, reset_at)
    local window = tonumber(args[2])
    local start = reset_at - 2 * window
    local state = redis.call('HMGET', key, 'w', 'c', 'p')
    local stored = tonumber(state[1])
    if stored == start then
      redis.call('HSET', key, 'c', (tonumber(state[2]) or 0) - units)
    elseif stored == start + window then
      redis.call('HSET', key, 'p', (tonumber(state[3]) or 0) - units)
    end
  end

  -- Resets the quota, leaving counted the units of leases still out (out:
  -- units by the reset their commit returned, which names their window):
  -- those of this window in its count, those of the previous one (ended,
  -- their give-backs under way) in the previous count.
  function m.reset(key, args, out)
    local window = tonumber(args[2])
    local start = clock.ms - (clock.ms % window)
    local cur, prev = out[start + 2 * window] or 0, out[start + window] or 0
    if cur == 0 and prev == 0 then
      redis.call('DEL', key)
      return
    end
    redis.call('HSET', key, 'w', start, 'c', cur, 'p', prev)
    redis.call('PEXPIRE', key, start + 2 * window - clock.ms)
  end
end
