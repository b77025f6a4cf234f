-- Create a job's hash and append its first event, in one atomic step (new_job.lua).
-- KEYS[1] job hash, KEYS[2] event stream (same hash tag, same slot)
-- ARGV[1] approximate MAXLEN, ARGV[2] event type, ARGV[3] event data (JSON),
-- ARGV[4..] field, value pairs of the new hash.
-- Returns the entry ID of the first event, or false if the job already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
return new_job(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], {unpack(ARGV, 4)})
