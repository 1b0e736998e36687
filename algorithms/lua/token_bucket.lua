-- Token bucket: the bucket holds up to capacity tokens and refills rate tokens
-- per window, continuously; a request takes one token. Tokens are stored scaled
-- by the window in ms (one token = window units, each ms adds rate units), so a
-- fractional refill is an exact integer and no float is ever stored.
-- KEYS[1]: hash of the identity {t = tokens × window_ms, ts = ms of t}
-- ARGV[1]: rate (tokens per window), ARGV[2]: window in ms, ARGV[3]: capacity
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}
local rate = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local full = tonumber(ARGV[3]) * window

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A missing key is a full bucket: expiry only removes buckets that were full.
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = full
local last = tonumber(state[2])
if last then
  -- max(): if the clock steps back (failover), refill nothing rather than
  -- refilling the same interval twice.
  tokens = math.min(full, tonumber(state[1]) + math.max(0, now - last) * rate)
  now = math.max(now, last)
end

-- ms until the bucket has gained units, rounded up.
local function after(units)
  return math.ceil(units / rate)
end

if tokens < window then
  -- Denied requests change nothing: the stored state already implies the refill.
  return {0, 0, after(full - tokens), after(window - tokens), now}
end

tokens = tokens - window
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
-- Once full again the key carries no information.
redis.call('PEXPIRE', KEYS[1], after(full - tokens))
return {1, math.floor(tokens / window), after(full - tokens), 0, now}
