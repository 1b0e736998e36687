-- Sliding window counter: the two-counter approximation used by Cloudflare and
-- Python's limits. It counts admissions in fixed windows aligned to multiples
-- of the window on Redis's clock and estimates the last window-long span as
--   current + previous × (window - elapsed) / window,
-- assuming the previous window's requests were spread evenly. A request is
-- admitted if the estimate plus it stays within the limit. Every comparison is
-- scaled by the window in ms, so the arithmetic is exact integers.
-- KEYS[1]: hash of the identity {w = current window start ms,
--          c = admitted in it, p = admitted in the window before}
-- ARGV[1]: limit (requests per window), ARGV[2]: window in ms
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = now - (now % window)
local elapsed = now - start

-- The stored window start, not the key's TTL, decides what the counts mean.
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local stored = tonumber(state[1])
local cur, prev = 0, 0
if stored == start then
  cur = tonumber(state[2]) or 0
  prev = tonumber(state[3]) or 0
elseif stored == start - window then
  prev = tonumber(state[2]) or 0
end

-- Until the estimate is zero: this window's count weighs until the end of the
-- next window, the previous window's until the end of this one.
local reset = 0
if cur > 0 then
  reset = start + 2 * window - now
elseif prev > 0 then
  reset = start + window - now
end

-- budget: how far cur × window may go.
local budget = limit * window - prev * (window - elapsed)
if (cur + 1) * window > budget then
  -- Denied requests are not counted. Next admission: later in this window,
  -- once the previous window's weight has dropped enough, or else in the next
  -- window, once this window's (then previous) weight has.
  local retry
  if prev > 0 and cur + 1 <= limit then
    retry = window - math.floor((limit - cur - 1) * window / prev) - elapsed
  else
    retry = 2 * window - math.floor((limit - 1) * window / cur) - elapsed
  end
  return {0, 0, reset, retry, now}
end

cur = cur + 1
redis.call('HSET', KEYS[1], 'w', start, 'c', cur, 'p', prev)
redis.call('PEXPIRE', KEYS[1], start + 2 * window - now)
return {1, math.floor((budget - cur * window) / window), start + 2 * window - now, 0, now}
