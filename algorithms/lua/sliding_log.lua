-- Sliding log: the admission time of every request admitted during the last
-- window, so the count over any window-long span is exact.
-- KEYS[1]: sorted set of the identity; score = admission time in µs on Redis's
--          clock, member = "<µs>:<nonce>" (the nonce keeps members unique when
--          two requests share a microsecond)
-- ARGV[1]: limit (requests per window), ARGV[2]: window in ms,
-- ARGV[3]: nonce, unique per call
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) * 1000

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)

-- Durations go out in whole ms, rounded up, so a request sent at retry_ms passes.
local function ms(us)
  return math.ceil(us / 1000)
end

-- An entry counts while now < its time + window. Trimming here, not expiry,
-- decides what is in the window.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])

if used >= limit then
  -- A denied request is not recorded: it must not lengthen the wait, and the
  -- set never holds more than limit members.
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  local newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  return {0, 0, ms(newest + window - now), ms(oldest + window - now), now_ms}
end

-- Build the member from TIME's own digits: tostring of a 16-digit number
-- loses precision in Lua 5.1.
local member = t[1] .. string.rep('0', 6 - #t[2]) .. t[2] .. ':' .. ARGV[3]
redis.call('ZADD', KEYS[1], now, member)
-- The newest entry leaves the window last; after that the set is empty.
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, limit - used - 1, ms(window), 0, now_ms}
