-- Announces an instance and counts the instances alive (instances.go).
-- KEYS[1]: sorted set of the instances, member = instance id, score = the
--          ms (Redis's clock) its entry lapses at
-- ARGV[1]: this instance's id
-- ARGV[2]: its entry's lifetime in ms; 0 removes it (the instance stops)
-- reply:   how many instances have an entry that has not lapsed
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZCARD', KEYS[1])
