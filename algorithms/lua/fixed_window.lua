-- Fixed window: a window opens with the first request after the previous one
-- closed (as in the tutorial: a counter that lives for one window), and admits
-- up to limit requests until it closes.
-- KEYS[1]: hash of the identity {w = window start ms, n = admitted in it}
-- ARGV[1]: limit (requests per window), ARGV[2]: window in ms
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The stored window start, not the key's TTL, decides whether the count is
-- current: expiry only collects garbage.
local state = redis.call('HMGET', KEYS[1], 'w', 'n')
local start = tonumber(state[1])
local used = tonumber(state[2]) or 0
if start == nil or now >= start + window then
  start = now
  used = 0
end
local reset = start + window - now

if used >= limit then
  return {0, 0, reset, reset, now}
end

used = used + 1
redis.call('HSET', KEYS[1], 'w', start, 'n', used)
redis.call('PEXPIRE', KEYS[1], reset)
return {1, limit - used, reset, 0, now}
