-- One hit on a rate limit (GCRA): up to LIMIT hits at once, then one per INTERVAL.
-- KEYS[1]  the limit's state for one subject (its theoretical arrival time, ms)
-- ARGV[1]  interval between hits at the sustained rate, ms (period / limit)
-- ARGV[2]  limit: hits allowed in a burst
-- Returns 0 when the hit is allowed, else the ms to wait before the next one is.
-- Redis's own clock, so every instance judges alike.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local allowed_at = tat - (limit - 1) * interval
if now < allowed_at then
  return allowed_at - now
end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', tat - now)
return 0
