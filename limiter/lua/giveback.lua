-- Driver of the give-back scripts: returns a lease's unused units to the one
-- rule of KEYS[1] through its module's refund, if the lease is still out
-- (lease.lua): a lease gives back once, and only while its units are counted
-- (a reset left them counted; an expired lease's may not be).
-- KEYS[1]: the rule's key
-- KEYS[2]: its lease set
-- ARGV[1]: units to give back (at most what the lease took); 0 ends a lease
--          used up
-- ARGV[2]: the reset (ms since the epoch, Redis's clock) of the lease's commit
-- ARGV[3]: the lease's member in KEYS[2] ("<id>:<units taken>:<reset>")
-- then:    the module's nargs arguments (of an Epoch module, with the
--          current window's key in KEYS[1] and its number: the lease's
--          window is named by ARGV[2])
-- reply:   1 if the units were given back, 0 if the lease was no longer out
local _, m = next(algorithms) -- the script's only module
local args = {}
for j = 1, m.nargs do
  args[j] = ARGV[3 + j]
end
local units = tonumber(ARGV[1])
if m.verify then
  m.verify(args) -- before anything is written: a wrong window is asked again
end
if not lease_end(KEYS[2], ARGV[3]) then
  return 0
end
if units > 0 then
  m.refund(KEYS[1], args, units, tonumber(ARGV[2]))
end
return 1
