-- Auth guard (trust.go): the addresses trusted for one user, those from
-- which a check of the user's password passed within the trusted TTL.
-- KEYS[1]: a sorted set; member = address, score = ms on Redis's clock of
--          its last successful check
-- ARGV[1]: 'check' or 'add'
-- ARGV[2]: the address
-- ARGV[3]: the trusted TTL in ms
-- ARGV[4]: add: the most addresses kept (the least recent leave first)
-- reply:   check: ms the address stays trusted (0: not trusted); add: 0
local key, op, addr, ttl = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if op == 'check' then
  local last = redis.call('ZSCORE', key, addr)
  if not last then
    return 0
  end
  return math.max(0, tonumber(last) + ttl - now)
end
redis.call('ZADD', key, now, addr)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ttl)
local n = redis.call('ZCARD', key)
if n > tonumber(ARGV[4]) then
  redis.call('ZREMRANGEBYRANK', key, 0, n - tonumber(ARGV[4]) - 1)
end
redis.call('PEXPIRE', key, ARGV[3])
return 0
