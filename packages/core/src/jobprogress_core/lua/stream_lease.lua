-- Take (or renew) one stream's lease for a subject, if it has fewer than LIMIT.
-- KEYS[1]  the subject's leases: member -> expiry (ms of Redis's clock)
-- ARGV[1]  member (instance and stream)
-- ARGV[2]  lease, ms
-- ARGV[3]  limit of concurrent streams; 0 renews the lease if it is still held
-- Returns 1 when the lease is held, 0 when the subject is at its limit.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if limit > 0 and redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  if redis.call('ZCARD', KEYS[1]) >= limit then
    return 0
  end
end
if limit > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
elseif redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[1]) == 0 then
  return 0  -- released (or lapsed) meanwhile: a renewal never brings a lease back
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
