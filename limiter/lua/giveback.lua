-- Driver of the give-back scripts: returns a lease's unused units to the one
-- rule of KEYS[1] through its module's refund.
-- KEYS[1]: the rule's key
-- ARGV[1]: units to give back
-- ARGV[2]: the reset (ms since the epoch, Redis's clock) of the lease's commit
-- then:    the module's nargs arguments
-- reply:   0
local _, m = next(algorithms) -- the script's only module
local args = {}
for j = 1, m.nargs do
  args[j] = ARGV[2 + j]
end
m.refund(KEYS[1], args, tonumber(ARGV[1]), tonumber(ARGV[2]))
return 0
