-- Release driver: gives back what held rules (concurrency) took in one
-- call, when its request ends, through each module's m.release.
-- KEYS[i]: the key of held rule i
-- ARGV[1]: the nonce of the call that took them
-- then per rule: algorithm name, the module's nargs arguments, cost
-- reply:   how many units were given back (those not expired already)
local nonce = ARGV[1]
local n, released = 2, 0
for i = 1, #KEYS do
  local m, args, cost, next_n = rule_at(n)
  if m == nil or m.release == nil then
    return redis.error_reply('no release for algorithm ' .. tostring(ARGV[n]))
  end
  n = next_n
  released = released + m.release(KEYS[i], args, cost, nonce)
end
return released
