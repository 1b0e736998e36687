-- gcra deciding one rule alone (algorithms.Spec.Fast): lua/gcra.lua's check
-- and commit written out flat, on the same key, for the engine's one-rule
-- calls; the engine's tests compare the two on every call.
-- KEYS[1]: the rule's key (gcra.lua: the TAT, or "tat,credit,lapse")
-- ARGV[1]: 1 to record the request if the rule admits it, 0 to peek
-- ARGV[2]: nonce (unused)
-- ARGV[3]: emission interval in µs, ARGV[4]: burst, ARGV[5]: cost
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}, as
--          limiter/lua/single.lua's
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local now_ms = math.floor(now / 1000)
-- A cost of 1 (most requests) is known without parsing it: Redis's Lua
-- parses numbers with strtod, which is most of what a script's own
-- arithmetic costs; likewise numbers go to Redis as %d (Redis writes a
-- Lua number with %.17g).
local key, interval, burst = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = ARGV[5] == '1' and 1 or tonumber(ARGV[5])
local tolerance = interval * burst
local ceil, floor = math.ceil, math.floor

-- A TAT in the past (or no key at all) means a full bucket.
local tat, credit, lapse = now, 0, 0
local stored = redis.call('GET', key)
if stored then
  local v = tonumber(stored)
  if v then
    if v > now then
      tat = v
    end
  else
    local st, sc, sl = string.match(stored, '^(%d+),(%d+),(%d+)$')
    if st then
      tat, lapse = math.max(now, tonumber(st)), tonumber(sl)
      if lapse <= now then
        lapse = 0
      else
        credit = tonumber(sc)
      end
    end
  end
end

local need = cost - credit
if need < 0 then
  need = 0
end
local remaining = floor((tolerance - (tat - now)) / interval) + credit
if cost > burst or tat + need * interval - now > tolerance then
  local retry = ceil(tolerance / 1000)
  if cost <= burst then
    -- Denied requests do not move TAT; the credit helps only if it is still
    -- there when TAT has come close enough.
    local at = tat + need * interval - tolerance
    if credit > 0 and at + 1000 > lapse then
      at = tat + cost * interval - tolerance
    end
    retry = ceil((at - now) / 1000)
  end
  if ARGV[1] == '1' then
    remaining = 0
  end
  return {0, remaining, ceil((tat - now) / 1000), retry, now_ms}
end
if ARGV[1] ~= '1' then
  return {1, remaining, ceil((tat - now) / 1000), 0, now_ms}
end

local used = math.min(cost, credit)
credit = credit - used
tat = tat + (cost - used) * interval
if credit > 0 or lapse > now then
  redis.call('SET', key, string.format('%.0f,%d,%.0f', tat, credit, lapse), 'PX', ceil((math.max(tat, lapse) - now) / 1000))
elseif tat > now then
  redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', ceil((tat - now) / 1000)))
else
  redis.call('DEL', key)
end
return {1, floor((tolerance - (tat - now)) / interval) + credit, ceil((tat - now) / 1000), 0, now_ms}
