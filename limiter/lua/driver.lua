-- Driver of the scripts for several rules (single.lua decides one): checks
-- every rule, and records the request in all of them only if all admit it, so
-- a request denied by one limit consumes none.
-- KEYS[i]: the key of rule i; in the modes but 1 and 0, then the lease set
--          of each rule's key (lease.lua), in the same order
-- ARGV[1]: 1 to record the request if every rule admits it, 0 to peek, l to
--          record it as a lease taken (ARGV[2] its id; lease.lua). For the
--          engine's admin calls, r to reset every rule (the module's m.reset
--          leaves counted the units of leases still out; without one, the
--          key is deleted) or g<n> to grant n units in every rule (Grant, the
--          modules' m.grant, told the units of leases out), each then
--          answering as a peek; h as 1 for rules that hold places
--          (concurrency), the last key being the call's release mark: once
--          it exists (its caller gave up and released), the call records
--          nothing, as 0 (never a lease: held rules are not leased)
--          d as 1 for rules with a delay: each rule's delay (ms) follows its
--          cost; a rule that denies a request it would admit within its
--          delay admits it now for then (its commit takes the slot ahead:
--          a bucket in debt), its retry in the reply being the wait
-- ARGV[2]: nonce, unique per call (sliding_log's members; a lease's id)
-- then per rule: algorithm name, the module's nargs arguments, cost (in
--          mode d, then its delay)
-- then, in mode l, per rule: the member of a lease to end (used up), or ''
-- reply:   per rule {allowed (0/1), remaining, reset_ms, retry_ms}, then now_ms.
--          Remaining is after the request when it was recorded, 0 for a rule
--          that denies it when committing, and what is left now otherwise.
local mode, nkeys = ARGV[1], #KEYS
if mode == 'h' then
  nkeys = nkeys - 1
  mode = redis.call('EXISTS', KEYS[#KEYS]) == 1 and '0' or '1'
end
local delayed = mode == 'd'
if delayed then
  mode = '1'
end
local lease = mode == 'l'
local commit = mode == '1' or lease
local nonce = ARGV[2]
local nrules = nkeys
if mode ~= '1' and mode ~= '0' then
  nrules = nkeys / 2
end

if not commit and mode ~= '0' then
  local reset, units = mode == 'r', tonumber(string.sub(mode, 2))
  if not reset and (string.sub(mode, 1, 1) ~= 'g' or units == nil or units < 1) then
    return redis.error_reply('unknown mode ' .. mode)
  end
  -- Every module is looked up before anything is written: all or nothing.
  local rules, n = {}, 3
  for i = 1, nrules do
    local m, args, _, next_n = rule_at(n)
    if m == nil then
      return redis.error_reply('unknown algorithm ' .. tostring(ARGV[n]))
    end
    if not (reset or m.grant) then
      return redis.error_reply('algorithm ' .. ARGV[n] .. ' cannot grant')
    end
    if m.verify then
      m.verify(args)
    end
    rules[i] = {m = m, args = args}
    n = next_n
  end
  for i, r in ipairs(rules) do
    if reset and r.m.reset then
      r.m.reset(KEYS[i], r.args, lease_out(KEYS[nrules + i]))
    elseif reset then
      redis.call('DEL', KEYS[i])
    else
      local by, out = lease_out(KEYS[nrules + i])
      r.m.grant(KEYS[i], r.args, units, nonce, out, by)
    end
  end
end

local rules, admit = {}, true
local n = 3
for i = 1, nrules do
  local m, args, cost, next_n = rule_at(n)
  if m == nil then
    return redis.error_reply('unknown algorithm ' .. tostring(ARGV[n]))
  end
  n = next_n
  local c = m.check(KEYS[i], args, cost)
  if delayed then
    local delay = tonumber(ARGV[n])
    n = n + 1
    if not c.ok and c.retry <= delay then
      c.ok, c.wait = true, c.retry
    end
  end
  rules[i] = {m = m, args = args, cost = cost, c = c}
  admit = admit and c.ok
end
if lease then
  for i = 1, nrules do
    if ARGV[n + i - 1] ~= '' then
      lease_end(KEYS[nrules + i], ARGV[n + i - 1])
    end
  end
end

local reply = {}
for i, r in ipairs(rules) do
  local c = r.c
  local allowed, remaining, reset, retry = 0, c.remaining, c.reset, c.retry
  if c.ok then
    allowed, retry = 1, c.wait or 0
    if commit and admit then
      remaining, reset = r.m.commit(KEYS[i], r.args, r.cost, c, nonce)
      if lease then
        lease_take(KEYS[nrules + i], nonce, r.cost, clock.ms + reset)
      end
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
