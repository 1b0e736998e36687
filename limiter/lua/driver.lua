-- Driver of the scripts for several rules (single.lua decides one): checks
-- every rule, and records the request in all of them only if all admit it, so
-- a request denied by one limit consumes none.
-- KEYS[i]: the key of rule i
-- ARGV[1]: 1 to record the request if every rule admits it, 0 to peek
-- ARGV[2]: nonce, unique per call (sliding_log's members)
-- then per rule: algorithm name, the module's nargs arguments, cost
-- reply:   per rule {allowed (0/1), remaining, reset_ms, retry_ms}, then now_ms.
--          Remaining is after the request when it was recorded, 0 for a rule
--          that denies it when committing, and what is left now otherwise.
local commit = ARGV[1] == '1'
local nonce = ARGV[2]

local rules, admit = {}, true
local n = 3
for i = 1, #KEYS do
  local m = algorithms[ARGV[n]]
  if m == nil then
    return redis.error_reply('unknown algorithm ' .. tostring(ARGV[n]))
  end
  local args = {}
  for j = 1, m.nargs do
    args[j] = ARGV[n + j]
  end
  local cost = tonumber(ARGV[n + m.nargs + 1])
  n = n + m.nargs + 2
  local c = m.check(KEYS[i], args, cost)
  rules[i] = {m = m, args = args, cost = cost, c = c}
  admit = admit and c.ok
end

local reply = {}
for i, r in ipairs(rules) do
  local c = r.c
  local allowed, remaining, reset, retry = 0, c.remaining, c.reset, c.retry
  if c.ok then
    allowed, retry = 1, 0
    if commit and admit then
      remaining, reset = r.m.commit(KEYS[i], r.args, r.cost, c, nonce)
    end
  elseif commit then
    remaining = 0
  end
  reply[#reply + 1] = allowed
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
end
reply[#reply + 1] = clock.ms
return reply
