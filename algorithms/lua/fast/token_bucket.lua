-- token_bucket deciding one rule alone (algorithms.Spec.Fast): the module's
-- (lua/token_bucket.lua) check and commit written out flat, on the same key,
-- for the engine's one-rule calls; the engine's tests compare the two on
-- every call.
-- KEYS[1]: the rule's key (the module's hash {t, ts, x})
-- ARGV[1]: 1 to record the request if the rule admits it, 0 to peek
-- ARGV[2]: nonce (unused)
-- ARGV[3]: rate (tokens per window), ARGV[4]: window in ms,
-- ARGV[5]: capacity, ARGV[6]: cost
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}, as
--          limiter/lua/single.lua's
local t = redis.call('TIME')
local floor, ceil, max = math.floor, math.ceil, math.max
local clock = t[1] * 1000 + floor(t[2] / 1000)
-- A cost of 1 (most requests) is known without parsing it (strtod), and
-- numbers go to Redis as %d (Redis writes a Lua number with %.17g).
local key, rate, window, capacity = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cost = ARGV[6] == '1' and 1 or tonumber(ARGV[6])
local full = capacity * window

-- A missing key is a full bucket: expiry only removes buckets that were full.
local state = redis.call('HMGET', key, 't', 'ts', 'x')
local tokens, now = full, clock
local last = tonumber(state[2])
local lapse = tonumber(state[3]) or 0
if last then
  local stored = tonumber(state[1])
  local top = full
  if stored > full and now < lapse then
    top = stored
  end
  tokens = math.min(top, stored + max(0, now - last) * rate)
  now = max(now, last)
end
local reset = ceil(max(0, full - tokens) / rate)
if cost > capacity or cost * window > tokens then
  local retry = ceil(full / rate)
  if cost <= capacity then
    retry = ceil((cost * window - tokens) / rate)
  end
  return {0, ARGV[1] == '1' and 0 or floor(tokens / window), reset, retry, clock}
end
if ARGV[1] ~= '1' then
  return {1, floor(tokens / window), reset, 0, clock}
end

tokens = tokens - cost * window
reset = ceil(max(0, full - tokens) / rate)
redis.call('HSET', key, 't', string.format('%d', tokens), 'ts', string.format('%d', now))
redis.call('PEXPIRE', key, string.format('%d', max(reset, lapse - clock, 1)))
return {1, floor(tokens / window), reset, 0, clock}
