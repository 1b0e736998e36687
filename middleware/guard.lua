-- Auth guard (guard.go): the credential checks of one client IP or one user
-- name, in a window-long log. A check takes a place in the log before it
-- runs, so guesses sent at once cannot pass the limit together. When it ends,
-- a failed check keeps its place for the window, any other gives it back.
-- KEYS[1]: the log, a sorted set; score = µs on Redis's clock when the place
--          was taken (or its check failed), member = "p:<id>" while the check
--          runs, "f:<id>" once it failed (id: random, made by the caller)
-- ARGV[1]: 'take', 'fail' or 'give'
-- ARGV[2]: the check's id
-- ARGV[3]: limit (places per window), ARGV[4]: window in ms
-- reply:   take: {0, 0} taken; {1, ms} refused, the log is full of failures
--          and ms (≥ 1) is when one leaves; {2, 0} busy, checks still
--          running hold the free places; fail, give: {0, 0}
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
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local places = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local used = #places / 2
if used < limit then
  redis.call('ZADD', key, now, 'p:' .. id)
  redis.call('PEXPIRE', key, ARGV[4])
  return {0, 0}
end
-- The log holds at most limit places (more only after the limit was
-- lowered), so reading all of them is cheap.
local failed = {}
for i = 1, #places, 2 do
  if string.sub(places[i], 1, 2) == 'f:' then
    failed[#failed + 1] = tonumber(places[i + 1])
  end
end
if #failed < limit then
  return {2, 0}
end
-- The oldest failures leave first; one more place needs #failed - limit + 1.
local leaving = failed[#failed - limit + 1]
return {1, math.max(1, math.ceil((leaving + window - now) / 1000))}
