-- Auth guard (guard.go): the credential checks of one client IP or one user
-- name, in a window-long log. A check takes a place in the log before it
-- runs, so guesses sent at once cannot pass the limit together. When it ends,
-- a failed check keeps its place for the window, any other gives it back.
-- KEYS[1]: the log, a sorted set; member "p:<id>" while the check runs, its
--          score minus the µs on Redis's clock when the place was taken;
--          "f:<id>" once it failed, its score the µs when it failed (id:
--          random, made by the caller). Running checks sort before the
--          failures, oldest failure first, so every step below is a count or
--          an index: O(log n), however long the log (a limit lowered after
--          many failures were stored).
-- ARGV[1]: 'take', 'fail', 'give' or 'peek' (is the log full of failures?
--          a right credential remembered by the caller takes no place)
-- ARGV[2]: the check's id
-- ARGV[3]: limit (places per window), ARGV[4]: window in ms
-- reply:   take: {0, 0} taken; {1, ms} refused, the log is full of failures
--          and ms (≥ 1) is when one leaves; {2, 0} busy, checks still
--          running hold the free places; peek: {0, 0} or {1, ms} as take;
--          fail, give: {0, 0}
local key, op, id = KEYS[1], ARGV[1], ARGV[2]
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4]) * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if op == 'give' then
  redis.call('ZREM', key, 'p:' .. id)
  return {0, 0}
end
if op == 'fail' then
  redis.call('ZREM', key, 'p:' .. id)
  redis.call('ZADD', key, now, 'f:' .. id)
  redis.call('PEXPIRE', key, ARGV[4])
  return {0, 0}
end
-- A place is held while now < its time + window. A check's place outlives
-- the check only if its process died while checking; it then counts as a
-- failure would.
redis.call('ZREMRANGEBYSCORE', key, '(0', now - window)
redis.call('ZREMRANGEBYSCORE', key, window - now, '(0')
local used = redis.call('ZCARD', key)
if used < limit then
  if op == 'take' then
    redis.call('ZADD', key, -now, 'p:' .. id)
    redis.call('PEXPIRE', key, ARGV[4])
  end
  return {0, 0}
end
local failed = redis.call('ZCOUNT', key, '(0', '+inf')
if failed < limit then
  if op == 'peek' then
    return {0, 0}
  end
  return {2, 0}
end
-- The oldest failures leave first; one more place needs failed - limit + 1
-- of them to leave. They follow the used - failed running checks, so the
-- last of those is at index used - limit.
local leaving = redis.call('ZRANGE', key, used - limit, used - limit, 'WITHSCORES')
return {1, math.max(1, math.ceil((tonumber(leaving[2]) + window - now) / 1000))}
