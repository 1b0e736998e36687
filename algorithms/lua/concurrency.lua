-- Concurrency (in-flight) limit: the places taken by requests under way. A
-- place is given back when its request ends (m.release, run by the engine's
-- Release) or expires timeout after it was taken, should the instance that
-- holds it die: expiry is in the member's score and decided on Redis's clock
-- here, not by key expiry.
-- key:  sorted set of the identity; member = "<nonce>:<i>" (the call's
--       nonce, i counts the units of one request), score = expiry in ms on
--       Redis's clock
-- args: limit (places), timeout in ms
-- A denied request takes no place. Nobody knows when a place will be given
-- back, so retry is at most a second (a poll), or the time until enough
-- places expire if that is sooner. A cost above limit never passes: retry is
-- one timeout.
do
  local m = {nargs = 2}
  algorithms.concurrency = m

  function m.check(key, args, cost)
    local limit, timeout = tonumber(args[1]), tonumber(args[2])
    local now = clock.ms
    -- Places of requests whose instance died: the only write of a check.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local used = redis.call('ZCARD', key)
    local c = {used = used, remaining = limit - used, reset = 0, retry = 0}
    if used > 0 then
      c.reset = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) - now
    end
    c.ok = cost <= limit - used
    if cost > limit then
      c.retry = timeout
    elseif not c.ok then
      local i = used + cost - limit - 1
      local expiry = tonumber(redis.call('ZRANGE', key, i, i, 'WITHSCORES')[2])
      c.retry = math.min(1000, expiry - now)
    end
    return c
  end

  function m.commit(key, args, cost, c, nonce)
    local limit, timeout = tonumber(args[1]), tonumber(args[2])
    local batch = {}
    for i = 1, cost do
      batch[#batch + 1] = clock.ms + timeout
      batch[#batch + 1] = nonce .. ':' .. i
    end
    redis.call('ZADD', key, unpack(batch))
    -- The newest places expire last; after that the set is empty.
    redis.call('PEXPIRE', key, timeout)
    return limit - c.used - cost, timeout
  end

  -- Gives back the places the call with nonce took; a place already
  -- expired (or given back) is not there to remove.
  function m.release(key, args, cost, nonce)
    local members = {}
    for i = 1, cost do
      members[i] = nonce .. ':' .. i
    end
    return redis.call('ZREM', key, unpack(members))
  end
end
