-- Submit a job for the workers, in one atomic step: count the submission against the
-- submitter's limit (gcra.lua), store the job with its first event (new_job.lua), queue
-- it in its partition's shard, and list it in its owner's history and feed.
-- KEYS[1] job hash, KEYS[2] event stream, KEYS[3] queue shard (all three in the job's slot);
-- on one Redis also KEYS[4] the submitter's limit state, KEYS[5] the owner's history,
-- KEYS[6] the owner's feed. On Redis Cluster those three are in other slots: the script is
-- given KEYS[1..3] only, and the limit and the index are round trips of their own (submissions.py).
-- ARGV[1] approximate MAXLEN of the event stream, ARGV[2] event type, ARGV[3] event data (JSON),
-- ARGV[4] job id, ARGV[5] limit interval (ms), ARGV[6] limit burst, ARGV[7] created (ms),
-- ARGV[8] history and feed length, ARGV[9] their TTL (s), ARGV[10] the feed entry's data,
-- ARGV[11] the new hash's fields, one JSON object of strings (one argument, not fifty: each
-- argument costs the client as much to send as the script costs Redis to run).
-- Returns 'ok'; {'limit', ms to wait} (nothing written); 'again' when the job exists: job
-- ids are random, so this is a retry of a call that was done (redis-py retries a command
-- whose reply was lost) and nothing is written, or counted, again.
local full = #KEYS == 6
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'again'}
end
-- Decoded before the first write: a script that fails is not rolled back.
local job_id = ARGV[4]
local fields = {}
for name, value in pairs(cjson.decode(ARGV[11])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
if full then
  local wait = gcra_hit(KEYS[4], ARGV[5], ARGV[6])
  if wait > 0 then
    return {'limit', wait}
  end
end
new_job(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], fields)
redis.call('XADD', KEYS[3], '*', 'jobId', job_id)
if full then
  redis.call('ZADD', KEYS[5], ARGV[7], job_id)
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[8]) - 1)
  redis.call('EXPIRE', KEYS[5], ARGV[9])
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[8], '*', 'type', 'status', 'data', ARGV[10])
  redis.call('EXPIRE', KEYS[6], ARGV[9])
end
return {'ok'}
