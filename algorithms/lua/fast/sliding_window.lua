-- sliding_window deciding one rule alone (algorithms.Spec.Fast): the
-- module's (lua/sliding_window.lua) check and commit written out flat, on
-- the same key, for the engine's one-rule calls; the engine's tests compare
-- the two on every call.
-- KEYS[1]: the rule's key (the module's hash {w, c, p})
-- ARGV[1]: 1 to record the request if the rule admits it, 0 to peek
-- ARGV[2]: nonce (unused)
-- ARGV[3]: limit, ARGV[4]: window in ms, ARGV[5]: cost
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}, as
--          limiter/lua/single.lua's
local t = redis.call('TIME')
local floor = math.floor
local now = t[1] * 1000 + floor(t[2] / 1000)
-- A cost of 1 (most requests) is known without parsing it (strtod), and
-- numbers go to Redis as %d (Redis writes a Lua number with %.17g).
local key, limit, window = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = ARGV[5] == '1' and 1 or tonumber(ARGV[5])
local start = now - now % window
local elapsed = now - start

local state = redis.call('HMGET', key, 'w', 'c', 'p')
local stored = tonumber(state[1])
local cur, prev = 0, 0
if stored == start then
  cur = tonumber(state[2]) or 0
  prev = tonumber(state[3]) or 0
elseif stored == start - window then
  prev = tonumber(state[2]) or 0
end
local reset = 0
if cur > 0 then
  reset = start + 2 * window - now
elseif prev > 0 then
  reset = start + window - now
end
local budget = limit * window - prev * (window - elapsed)
local remaining = floor((budget - cur * window) / window)
if cost > limit or cost * window > budget - cur * window then
  local retry = 2 * window -- a cost above the limit never passes
  if cost <= limit then
    if prev > 0 and cur + cost <= limit then
      retry = window - floor((limit - cur - cost) * window / prev) - elapsed
    else
      retry = 2 * window - floor((limit - cost) * window / cur) - elapsed
    end
  end
  if ARGV[1] == '1' then
    remaining = 0
  end
  return {0, remaining, reset, retry, now}
end
if ARGV[1] ~= '1' then
  return {1, remaining, reset, 0, now}
end

cur = cur + cost
reset = start + 2 * window - now
if stored == start then
  redis.call('HINCRBY', key, 'c', ARGV[5])
else
  redis.call('HSET', key, 'w', string.format('%d', start), 'c', string.format('%d', cur), 'p', string.format('%d', prev))
  redis.call('PEXPIRE', key, string.format('%d', reset))
end
return {1, floor((budget - cur * window) / window), reset, 0, now}
