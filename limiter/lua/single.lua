-- Driver of the scripts for one rule, the common case: the module's check and
-- commit called directly, without the general driver's tables and loops.
-- KEYS[1]: the rule's key
-- ARGV[1]: 1 to record the request if the rule admits it, 0 to peek; h as
--          1, unless KEYS[2], the call's release mark, exists (driver.lua)
-- ARGV[2]: nonce, unique per call (sliding_log's members)
-- then:    the module's nargs arguments, cost
-- reply:   {allowed (0/1), remaining, reset_ms, retry_ms, now_ms}, as driver.lua.
local _, m = next(algorithms) -- the script's only module
local args = {}
for j = 1, m.nargs do
  args[j] = ARGV[2 + j]
end
local cost = tonumber(ARGV[m.nargs + 3])
local commit = ARGV[1] == '1' or ARGV[1] == 'h' and redis.call('EXISTS', KEYS[2]) == 0
local c = m.check(KEYS[1], args, cost)
if not c.ok then
  return {0, commit and 0 or c.remaining, c.reset, c.retry, clock.ms}
end
if not commit then
  return {1, c.remaining, c.reset, 0, clock.ms}
end
local remaining, reset = m.commit(KEYS[1], args, cost, c, ARGV[2])
return {1, remaining, reset, 0, clock.ms}
