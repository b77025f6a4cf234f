-- Claim the external jobs whose time limit has passed, so that one sweeper ends each.
-- KEYS[1] sorted set of deadlines (member job id, score ms since the epoch)
-- ARGV[1] now (ms), ARGV[2] how long a claim lasts (ms), ARGV[3] at most this many.
-- Every job returned has its deadline moved to now + the claim time: no other sweeper takes
-- it meanwhile, and if this one dies before ending it, another does once the claim lapses.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, job_id in ipairs(due) do
  redis.call('ZADD', KEYS[1], until_ms, job_id)
end
return due
