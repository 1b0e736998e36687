-- fixed_window deciding one rule alone (algorithms.Spec.Fast): the
-- module's (lua/fixed_window.lua) check and commit written out flat, on
-- the same key, for the engine's one-rule calls; the engine's tests compare
-- the two on every call. A commit counts first and takes back what a
-- denial counted: one call to Redis where the module reads, then counts.
-- KEYS[1]: the current window's key, "<rule key>:<n>"
-- ARGV[1]: 1 to record the request if the rule admits it, 0 to peek
-- ARGV[2]: nonce (unused)
-- ARGV[3]: limit, ARGV[4]: window in ms, ARGV[5]: n, ARGV[6]: cost
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}, as
--          limiter/lua/single.lua's; "WRONGWINDOW <now_ms>", writing
--          nothing, when n is not Redis's window
local t = redis.call('TIME')
-- Arithmetic turns strings into numbers: no tonumber or math.floor calls.
local us = t[2] % 1000
local now = t[1] * 1000 + (t[2] - us) / 1000
local limit, window, cost = ARGV[3] + 0, ARGV[4] + 0, ARGV[6] + 0
local stop = now - now % window + window
if stop / window - 1 ~= ARGV[5] + 0 then
  return redis.error_reply(string.format('WRONGWINDOW %.0f', now))
end
local key, commit = KEYS[1], ARGV[1] == '1'
if commit and cost <= limit then
  local used = redis.call('INCRBY', key, cost)
  if used <= limit then
    if used == cost then -- a new key (or one at 0, whose expiry this is)
      redis.call('PEXPIREAT', key, stop)
    end
    return {1, limit - used, stop - now, 0, now}
  end
  -- Denied: the count was above 0, so the key was there, with its expiry.
  redis.call('DECRBY', key, cost)
  return {0, 0, stop - now, stop - now, now}
end
-- A peek, or a cost above the limit (admitted only where grants made room):
-- counted only once known to be admitted, as its key may not exist.
local used = tonumber(redis.call('GET', key)) or 0
local remaining, reset = limit - used, 0
if used > 0 then
  reset = stop - now
end
if cost <= remaining and commit then
  used = redis.call('INCRBY', key, cost)
  if used == cost then
    redis.call('PEXPIREAT', key, stop)
  end
  return {1, limit - used, stop - now, 0, now}
elseif cost <= remaining then
  return {1, remaining, reset, 0, now}
elseif commit then
  remaining = 0
end
if cost > limit then
  return {0, remaining, reset, window, now}
end
return {0, remaining, reset, stop - now, now}
