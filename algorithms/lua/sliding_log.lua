-- Sliding log: the admission time of every request admitted during the last
-- window, so the count over any window-long span is exact.
-- key:  sorted set of the identity; score = admission time in µs on Redis's
--       clock, member = "<µs>:<nonce>:<i>" (the nonce keeps members unique when
--       two requests share a microsecond, i counts the units of one request)
-- args: limit (requests per window), window in ms
-- A request of cost n adds n members. A cost above limit never passes: retry
-- is one window.
do
  local m = {nargs = 2}
  algorithms.sliding_log = m

  function m.check(key, args, cost)
    local limit = tonumber(args[1])
    local window = tonumber(args[2]) * 1000
    local now = clock.us
    -- An entry counts while now < its time + window. Trimming here, not
    -- expiry, decides what is in the window; it is the only write of a check.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local used = redis.call('ZCARD', key)
    local c = {used = used, remaining = limit - used, reset = 0, retry = 0}
    if used > 0 then
      local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
      c.reset = ms(newest + window - now)
    end
    c.ok = cost <= limit - used
    if cost > limit then
      c.retry = ms(window)
    elseif not c.ok then
      -- A denied request is not recorded: it must not lengthen the wait, and
      -- the set never holds more than limit members. It passes once the
      -- entries in its way have left the window.
      local i = used + cost - limit - 1
      local leaving = tonumber(redis.call('ZRANGE', key, i, i, 'WITHSCORES')[2])
      c.retry = ms(leaving + window - now)
    end
    return c
  end

  function m.commit(key, args, cost, c, nonce)
    local limit = tonumber(args[1])
    -- Build members from TIME's own digits: tostring of a 16-digit number
    -- loses precision in Lua 5.1.
    local base = clock.sec .. string.rep('0', 6 - #clock.usec) .. clock.usec .. ':' .. nonce .. ':'
    -- ZADD in chunks: unpack of a large cost would overflow Lua's stack.
    local i = 1
    while i <= cost do
      local batch = {}
      for j = i, math.min(cost, i + 99) do
        batch[#batch + 1] = clock.us
        batch[#batch + 1] = base .. j
      end
      redis.call('ZADD', key, unpack(batch))
      i = i + 100
    end
    -- The newest entries leave the window last; after that the set is empty.
    redis.call('PEXPIRE', key, args[2])
    return limit - c.used - cost, tonumber(args[2])
  end
end
