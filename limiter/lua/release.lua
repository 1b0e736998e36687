-- Release driver: gives back what held rules (concurrency) took in one
-- call, when its request ends, through each module's m.release.
-- KEYS[i]: the key of held rule i; then, when ARGV[2] > 0, the call's
--          release mark
-- ARGV[1]: the nonce of the call that took them
-- ARGV[2]: 0, or for a call that failed (its script may not have run yet),
--          how long in ms to keep the mark, which stops its script from
--          taking places should it run after this release
-- then per rule: algorithm name, the module's nargs arguments, cost
-- reply:   how many units were given back (those not expired already)
local nonce, mark_ms = ARGV[1], tonumber(ARGV[2])
local nkeys = #KEYS
if mark_ms > 0 then
  nkeys = nkeys - 1
  redis.call('SET', KEYS[#KEYS], 1, 'PX', mark_ms)
end
local n, released = 3, 0
for i = 1, nkeys do
  local m, args, cost, next_n = rule_at(n)
  if m == nil or m.release == nil then
    return redis.error_reply('no release for algorithm ' .. tostring(ARGV[n]))
  end
  n = next_n
  released = released + m.release(KEYS[i], args, cost, nonce)
end
return released
