-- GCRA (generic cell rate algorithm), as go-redis/redis_rate and redis-cell do
-- it: the key holds the theoretical arrival time (TAT), the time at which the
-- bucket would be full again. A request is admitted if moving TAT one emission
-- interval later keeps it within burst intervals of now.
-- KEYS[1]: string, the TAT in µs since the epoch on Redis's clock
-- ARGV[1]: emission interval in µs (window / rate, rounded up),
-- ARGV[2]: burst (capacity)
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)

-- Durations go out in whole ms, rounded up, so a request sent at retry_ms passes.
local function ms(us)
  return math.ceil(us / 1000)
end

-- A TAT in the past (or no key at all) means a full bucket.
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(now, tonumber(stored))
end
local new_tat = tat + interval

if new_tat - now > tolerance then
  -- Denied requests do not move TAT.
  return {0, 0, ms(tat - now), ms(new_tat - tolerance - now), now_ms}
end

-- All values are whole µs, so they reach Redis as exact integers.
redis.call('SET', KEYS[1], new_tat, 'PX', ms(new_tat - now))
return {1, math.floor((tolerance - (new_tat - now)) / interval), ms(new_tat - now), 0, now_ms}
