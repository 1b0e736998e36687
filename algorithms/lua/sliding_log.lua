-- Sliding log: the admission time of every request admitted during the last
-- window, so the count over any window-long span is exact.
-- key:  sorted set of the identity; score = admission time in µs on Redis's
--       clock, member = "<µs>:<nonce>:<i>" (the nonce keeps members unique when
--       two requests share a microsecond, i counts the units of one request);
--       and a grant's credits, score = 2^52 + their lapse in µs, member
--       "g:<nonce>:<i>": above every admission time, so they never leave with
--       the window and sort after every entry
-- args: limit (requests per window), window in ms
-- A request of cost n adds n members. A cost above limit never passes: retry
-- is one window.
-- A grant of n removes the n newest entries (they would come back last); what
-- it cannot remove becomes credits, used before new entries are added and
-- lapsing one window after the grant.
do
  local m = {nargs = 2}
  algorithms.sliding_log = m
  local credits = 4503599627370496 -- 2^52: times in µs stay below it until 2112

  function m.check(key, args, cost)
    local limit = tonumber(args[1])
    local window = tonumber(args[2]) * 1000
    local now = clock.us
    -- An entry counts while now < its time + window. Trimming here, not
    -- expiry, decides what is in the window; it is the only write of a check.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local used = redis.call('ZCARD', key)
    local c = {used = used, credit = 0, lapse = 0, reset = 0, retry = 0}
    if used > 0 then
      local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
      if newest >= credits then
        -- Credits: drop the lapsed ones and count the rest apart (rare: only
        -- after a grant, so the common path pays nothing for them).
        c.lapse = newest - credits
        redis.call('ZREMRANGEBYSCORE', key, credits, credits + now)
        c.credit = redis.call('ZCOUNT', key, credits, '+inf')
        used = redis.call('ZCARD', key) - c.credit
        c.used = used
        newest = nil
        if used > 0 then
          newest = tonumber(redis.call('ZRANGE', key, used - 1, used - 1, 'WITHSCORES')[2])
        end
      end
      if newest then
        c.reset = ms(newest + window - now)
      end
    end
    c.remaining = limit - used + c.credit
    c.ok = cost <= limit and cost <= c.remaining
    if cost > limit then
      c.retry = ms(window)
    elseif not c.ok then
      -- A denied request is not recorded: it must not lengthen the wait, and
      -- the set never holds more than limit entries. It passes once the
      -- entries in its way have left the window; the credits count only if
      -- they have not lapsed by then (all lapse together).
      local function leaving(i)
        return tonumber(redis.call('ZRANGE', key, i, i, 'WITHSCORES')[2]) + window
      end
      local at = leaving(used + cost - limit - 1)
      if c.credit > 0 then
        local sooner = leaving(used + cost - limit - c.credit - 1)
        -- Retry is rounded up to a whole ms: the credit must outlive that.
        if sooner + 1000 <= c.lapse then
          at = sooner
        end
      end
      c.retry = ms(at - now)
    end
    return c
  end

  function m.commit(key, args, cost, c, nonce)
    local limit = tonumber(args[1])
    local add = cost
    if c.credit > 0 then
      -- Credits first: the lowest ranked among them, right after the entries.
      local use = math.min(cost, c.credit)
      redis.call('ZREMRANGEBYRANK', key, c.used, c.used + use - 1)
      add = cost - use
    end
    -- Build members from TIME's own digits: tostring of a 16-digit number
    -- loses precision in Lua 5.1.
    local base = clock.sec .. string.rep('0', 6 - #clock.usec) .. clock.usec .. ':' .. nonce .. ':'
    -- ZADD in chunks: unpack of a large cost would overflow Lua's stack.
    local i = 1
    while i <= add do
      local batch = {}
      for j = i, math.min(add, i + 99) do
        batch[#batch + 1] = clock.us
        batch[#batch + 1] = base .. j
      end
      redis.call('ZADD', key, unpack(batch))
      i = i + 100
    end
    -- The newest entries leave the window last; after that the set is empty
    -- (credits lapse within a window of their grant too).
    redis.call('PEXPIRE', key, args[2])
    return c.remaining - cost, tonumber(args[2])
  end

  function m.grant(key, args, n, nonce)
    local window = tonumber(args[2]) * 1000
    local c = m.check(key, args, 0)
    local back = math.min(n, c.used)
    if back > 0 then
      redis.call('ZREMRANGEBYRANK', key, c.used - back, c.used - 1)
    end
    if n > back then
      -- All credits lapse together, one window after the latest grant.
      -- Several grants give at most one limit beyond it.
      local total = math.min(c.credit + n - back, tonumber(args[1]))
      redis.call('ZREMRANGEBYSCORE', key, credits, '+inf')
      local i = 1
      while i <= total do
        local batch = {}
        for j = i, math.min(total, i + 99) do
          batch[#batch + 1] = credits + clock.us + window
          batch[#batch + 1] = 'g:' .. nonce .. ':' .. j
        end
        redis.call('ZADD', key, unpack(batch))
        i = i + 100
      end
    end
    redis.call('PEXPIRE', key, args[2])
  end
end
