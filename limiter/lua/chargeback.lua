-- Driver of the charge-back script (local.go): records in Redis what this
-- instance admitted in-process while Redis could not decide, with the
-- module's own commit, whatever the rule has left: the requests were served,
-- so they count, beyond the limit if need be (a window's count above it, a
-- bucket in debt), and what the client may still have is what remains.
-- KEYS[1]: the rule's key
-- ARGV[1]: nonce, unique per call (sliding_log's members)
-- then:    algorithm name, the module's nargs arguments, units admitted
-- reply:   0
local m, args, units = rule_at(2)
if m == nil then
  return redis.error_reply('unknown algorithm ' .. tostring(ARGV[2]))
end
m.commit(KEYS[1], args, units, m.check(KEYS[1], args, units), ARGV[1])
return 0
