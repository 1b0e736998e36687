-- Driver of the refund script (Limiter.Refund): gives back, in every rule
-- of KEYS, the units one admitted request took, through the module's
-- m.refund (the leases' give-back: never more than had the request not
-- been counted, nothing to a window that has closed), all rules in one
-- script, then answers as a peek.
-- KEYS[i]: the key of rule i
-- ARGV:    per rule: algorithm name, the module's nargs arguments, the
--          units the request took, the reset (ms since the epoch, Redis's
--          clock) its commit returned
-- reply:   per rule {allowed (0/1), remaining, reset_ms, retry_ms} as they
--          are after the refund, then now_ms
local rules, n = {}, 1
for i = 1, #KEYS do
  local m, args, units, next_n = rule_at(n)
  if m == nil or m.refund == nil then
    return redis.error_reply('algorithm ' .. tostring(ARGV[n]) .. ' cannot refund')
  end
  if m.verify then
    m.verify(args) -- before anything is written: a wrong window is asked again
  end
  rules[i] = {m = m, args = args, units = units, reset_at = tonumber(ARGV[next_n])}
  n = next_n + 1
end
local reply = {}
for i, r in ipairs(rules) do
  r.m.refund(KEYS[i], r.args, r.units, r.reset_at)
  local c = r.m.check(KEYS[i], r.args, r.units)
  reply[#reply + 1] = c.ok and 1 or 0
  reply[#reply + 1] = c.remaining
  reply[#reply + 1] = c.reset
  reply[#reply + 1] = c.retry
end
reply[#reply + 1] = clock.ms
return reply
