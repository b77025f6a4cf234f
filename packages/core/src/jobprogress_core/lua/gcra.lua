-- One hit on a rate limit (GCRA): up to LIMIT hits at once, then one per INTERVAL.
-- A function that the scripts counting a hit begin with (store.load_script joins them).
-- key: the limit's state for one subject (its theoretical arrival time, ms);
-- interval: ms between hits at the sustained rate (period / limit); limit: hits in a burst.
-- Returns 0 when the hit is allowed (and counts it), else the ms to wait before the next
-- one is (and writes nothing). Redis's own clock, so every instance judges alike.
local function gcra_hit(key, interval, limit)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  interval = tonumber(interval)
  limit = tonumber(limit)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then
    tat = now
  end
  local allowed_at = tat - (limit - 1) * interval
  if now < allowed_at then
    return allowed_at - now
  end
  tat = tat + interval
  redis.call('SET', key, tat, 'PX', tat - now)
  return 0
end
