-- Fixed window, key layout 2: windows align to the epoch (window n spans
-- [n × window, (n + 1) × window) ms on Redis's clock), and window n's count
-- is a plain integer at key "<rule key>:<n>" (the :<n> suffix is the
-- layout's version mark; layout 1 kept a hash {w, n} at the rule key, its
-- window opening with the first request). A window's identity is the key's
-- name: a count is current because its key is the current window's, never
-- because of expiry, which only collects finished windows.
-- key:  the current window's key, "<rule key>:<n>" (the engine computes n
--       from its clock, corrected by what Redis's replies said of Redis's)
-- args: limit (requests per window), window in ms, n
-- Where n is not Redis's current window, every function raises
-- "WRONGWINDOW <now_ms>" before writing anything, and the engine asks again
-- with Redis's window: exact on Redis's clock.
-- A cost above limit never passes: retry is one window.
-- A grant of n lowers the current window's count by n, below zero if need be
-- (the window then admits up to twice the limit), and lapses as the window
-- closes.
do
  local m = {nargs = 3}
  algorithms.fixed_window = m

  -- The window's end (ms), after checking that args name Redis's window.
  function m.verify(args)
    local window = tonumber(args[2])
    local n = math.floor(clock.ms / window)
    if tonumber(args[3]) ~= n then
      error(string.format('WRONGWINDOW %.0f', clock.ms), 0)
    end
    return (n + 1) * window
  end

  -- Sets the window's expiry at its end on the clock that decides (only
  -- garbage collection: after its end the key is never read or written,
  -- as no caller's window is it any more).
  local function expire(key, stop)
    redis.call('PEXPIREAT', key, stop)
  end

  function m.check(key, args, cost)
    local limit = tonumber(args[1])
    local stop = m.verify(args)
    local used = tonumber(redis.call('GET', key)) or 0
    local c = {stop = stop, used = used, remaining = limit - used, reset = 0, retry = 0}
    if used > 0 then
      c.reset = stop - clock.ms
    end
    c.ok = cost <= limit - used
    if cost > limit then
      c.retry = tonumber(args[2])
    elseif not c.ok then
      c.retry = stop - clock.ms
    end
    return c
  end

  function m.commit(key, args, cost, c)
    local used = redis.call('INCRBY', key, cost)
    -- The expiry is set as the key is made, not on every request.
    if used == cost then
      expire(key, c.stop)
    end
    return tonumber(args[1]) - used, c.stop - clock.ms
  end

  -- by: units of the leases still out by the reset their commit returned
  -- (lease.lua), the end of the window that counted them; this window's
  -- stay counted beyond the cap, so that their exact give-backs never take
  -- the count below it (those used before the grant stay counted:
  -- under-admission, as at a reset).
  function m.grant(key, args, n, _, _, by)
    local c = m.check(key, args, 0)
    local out = by and by[c.stop] or 0
    -- Several grants give at most one limit beyond it.
    redis.call('SET', key, math.max(c.used - n, out - tonumber(args[1])))
    expire(key, c.stop)
  end

  -- Gives back units leased and not used if their window (reset_at, the
  -- reset their commit returned, is its end) is the current one and still
  -- counts (a reset with no lease out deleted it): a later window never
  -- counted them. Exactly, so a grant made meanwhile is kept whole.
  function m.refund(key, args, units, reset_at)
    if m.verify(args) == reset_at and redis.call('EXISTS', key) == 1 then
      redis.call('DECRBY', key, units)
    end
  end

  -- Resets the quota, leaving counted the units of leases still out of the
  -- current window (out: units by the reset their commit returned, the
  -- window's end), so their give-backs still find them.
  function m.reset(key, args, out)
    local stop = m.verify(args)
    local units = out[stop] or 0
    if units == 0 then
      redis.call('DEL', key)
    else
      redis.call('SET', key, units)
      expire(key, stop)
    end
  end
end
