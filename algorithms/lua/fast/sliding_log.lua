-- sliding_log deciding one rule alone (algorithms.Spec.Fast): the module's
-- (lua/sliding_log.lua) check and commit written out flat, on the same key,
-- for the engine's one-rule calls; the engine's tests compare the two on
-- every call.
-- KEYS[1]: the rule's key (the module's sorted set of admissions and credits)
-- ARGV[1]: 1 to record the request if the rule admits it, 0 to peek
-- ARGV[2]: nonce, unique per call (in the members)
-- ARGV[3]: limit, ARGV[4]: window in ms, ARGV[5]: cost
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}, as
--          limiter/lua/single.lua's
local t = redis.call('TIME')
local ceil = math.ceil
local sec, usec = t[1], t[2]
local now = sec * 1000000 + usec
local now_ms = math.floor(now / 1000)
-- A cost of 1 (most requests) is known without parsing it (strtod).
local key, limit = KEYS[1], tonumber(ARGV[3])
local cost = ARGV[5] == '1' and 1 or tonumber(ARGV[5])
local window = tonumber(ARGV[4]) * 1000
local credits = 4503599627370496 -- 2^52, as in the module

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
local used = redis.call('ZCARD', key)
local credit, lapse, reset = 0, 0, 0
if used > 0 then
  local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
  if newest >= credits then
    -- Credits (after a grant): drop the lapsed ones, count the rest apart.
    lapse = newest - credits
    redis.call('ZREMRANGEBYSCORE', key, credits, credits + now)
    credit = redis.call('ZCOUNT', key, credits, '+inf')
    used = redis.call('ZCARD', key) - credit
    newest = nil
    if used > 0 then
      newest = tonumber(redis.call('ZRANGE', key, used - 1, used - 1, 'WITHSCORES')[2])
    end
  end
  if newest then
    reset = ceil((newest + window - now) / 1000)
  end
end
local remaining = limit - used + credit
if cost > limit or cost > remaining then
  local retry = ceil(window / 1000)
  if cost <= limit then
    -- It passes once the entries in its way have left the window; the
    -- credits count only if they have not lapsed by then.
    local i = used + cost - limit - 1
    local at = tonumber(redis.call('ZRANGE', key, i, i, 'WITHSCORES')[2]) + window
    if credit > 0 then
      i = i - credit
      local sooner = tonumber(redis.call('ZRANGE', key, i, i, 'WITHSCORES')[2]) + window
      if sooner + 1000 <= lapse then
        at = sooner
      end
    end
    retry = ceil((at - now) / 1000)
  end
  if ARGV[1] == '1' then
    remaining = 0
  end
  return {0, remaining, reset, retry, now_ms}
end
if ARGV[1] ~= '1' then
  return {1, remaining, reset, 0, now_ms}
end

local add = cost
if credit > 0 then
  local use = math.min(cost, credit)
  redis.call('ZREMRANGEBYRANK', key, used, used + use - 1)
  add = cost - use
end
-- Members from TIME's own digits (tostring of 16 digits loses precision);
-- the score too, so Redis need not format the number.
local stamp = sec .. string.rep('0', 6 - #usec) .. usec
local base = stamp .. ':' .. ARGV[2] .. ':'
if add == 1 then
  redis.call('ZADD', key, stamp, base .. 1)
else
  local i = 1
  while i <= add do
    local batch = {}
    for j = i, math.min(add, i + 99) do
      batch[#batch + 1] = now
      batch[#batch + 1] = base .. j
    end
    redis.call('ZADD', key, unpack(batch))
    i = i + 100
  end
end
redis.call('PEXPIRE', key, ARGV[4])
return {1, remaining - cost, tonumber(ARGV[4]), 0, now_ms}
