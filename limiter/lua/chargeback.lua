-- Driver of the charge-back script (local.go): records in Redis what this
-- instance admitted in-process while Redis could not decide, with the
-- module's own commit, whatever the rule has left: the requests were served,
-- so they count, beyond the limit if need be (a window's count above it, a
-- bucket in debt), and what the client may still have is what remains.
-- KEYS[1]: the rule's key
-- KEYS[2]: this charge's mark: a charge retried after its reply was lost
--          (Redis ran it) is not counted twice
-- ARGV[1]: nonce, unique per call (sliding_log's members)
-- ARGV[2]: the mark's lifetime in ms
-- then:    algorithm name, the module's nargs arguments, units admitted
-- reply:   1 when charged, 0 when the mark says it was already
local m, args, units = rule_at(3)
if m == nil then
  return redis.error_reply('unknown algorithm ' .. tostring(ARGV[3]))
end
if m.verify then
  m.verify(args) -- before the mark: a wrong window is asked again
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return 0
end
m.commit(KEYS[1], args, units, m.check(KEYS[1], args, units), ARGV[1])
return 1
