-- Prelude of every script (scripts.go, compose): the table the algorithm
-- modules register in, and Redis's clock, read once so that every rule of a
-- call decides at the same instant.
-- A module is a Lua file that adds itself as algorithms.<name> = m with
--   m.nargs                        how many ARGV entries it takes (before cost)
--   m.check(key, args, cost)       reads the state, writes nothing (sliding_log
--                                  only trims entries that left the window) and
--                                  returns c: c.ok (admits cost more requests),
--                                  c.remaining and c.reset (ms) as they are now,
--                                  c.retry (ms until c.ok; 0 when ok), plus
--                                  whatever commit needs
--   m.commit(key, args, cost, c, nonce)  records the request checked in c and
--                                  returns remaining, reset_ms after it
--   m.grant(key, args, n, nonce, out)  optional (algorithms.Spec.Grants): gives
--                                  n more units now, beyond the limit if need
--                                  be, until the current window ends (buckets:
--                                  for as long as an empty bucket takes to
--                                  fill); out: units of leases still out
--                                  (lease.lua), which the buckets count as in
--                                  the bucket when deciding it goes beyond
--   m.refund(key, args, units, reset_at)  optional, for leases (Spec.LeaseFor):
--                                  gives back units committed and not used,
--                                  reset_at the reset (ms since the epoch) the
--                                  commit that took them returned; never leaves
--                                  more than had they not been taken, takes no
--                                  grant away and never goes beyond the grant
--                                  cap; called once per lease still out
--                                  (lease.lua), so it subtracts exactly
--   m.reset(key, args, out, total) optional, with m.refund: the quota full
--                                  again but the units of leases still out
--                                  (out: units by the reset_at of the commit
--                                  that took them; total: their sum), which
--                                  stay counted where their give-backs find
--                                  them; without it a reset deletes the key
--   m.verify(args)                 optional, for modules whose key names its
--                                  window (algorithms.Spec.Epoch): raises
--                                  "WRONGWINDOW <now_ms>" when the window args
--                                  name is not Redis's current one; m.check
--                                  calls it, and the drivers that write
--                                  before checking call it for every rule
--                                  first, so a wrong window writes nothing
-- and, for an algorithm whose requests hold what they take until they end
-- (algorithms.Spec.Held: concurrency), in the release script (release.lua)
--   m.release(key, args, cost, nonce)    gives back what the call with nonce
--                                  took; returns how many units it gave back
-- args are the module's ARGV entries as strings (a calendar's end with the
-- period starts the engine computes per call, an Epoch module's with the
-- window number; its key is then that window's).
local algorithms = {}
local clock = {}
do
  local t = redis.call('TIME')
  clock.sec, clock.usec = t[1], t[2]
  clock.us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  clock.ms = math.floor(clock.us / 1000)
end

-- The rule whose ARGV start at n (algorithm name, the module's nargs
-- arguments, cost), for the drivers of several rules: its module (nil for
-- an unknown name), its arguments, its cost, and where the next rule starts.
local function rule_at(n)
  local m = algorithms[ARGV[n]]
  if m == nil then
    return nil
  end
  local args = {}
  for j = 1, m.nargs do
    args[j] = ARGV[n + j]
  end
  return m, args, tonumber(ARGV[n + m.nargs + 1]), n + m.nargs + 2
end

-- Durations go out in whole ms, rounded up, so a request sent at retry_ms passes.
local function ms(us)
  return math.ceil(us / 1000)
end
